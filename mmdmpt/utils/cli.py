"""What every tool under ``tools/`` shares: user errors as one block, quiet imports.

A tool's ``main(argv)`` is run by :func:`run_tool`::

    if __name__ == '__main__':
        raise SystemExit(run_tool(main))

A user error (:class:`~mmdmpt.utils.errors.MMDMPTError`) is then printed to
stderr as one block -- its kind, the message (which names the key or path,
what was found and what was expected) and a hint about ``--debug`` -- and the
tool exits with status 2. With ``--debug`` on the command line (or
``MMDMPT_DEBUG=1`` in the environment) the error is raised with its
traceback instead. Any other exception is an internal error and keeps its
traceback.

This module imports nothing heavy, so that ``--help`` stays fast.
"""

import logging
import os
import sys
import warnings
from typing import Callable, List, Optional, Sequence

from .errors import ConfigError, MMDMPTError, user_error_message

__all__ = [
    'DEBUG_HELP',
    'ThirdPartyLogFilter',
    'add_debug_argument',
    'check_device',
    'format_user_error',
    'non_negative_int',
    'positive_int',
    'quiet_third_party',
    'run_tool',
]

DEBUG_HELP = 'show the traceback of user errors (they are printed as one message otherwise)'

#: Messages of third-party libraries that say nothing to an mmdmpt user:
#: mmcv-lite lacks the compiled ops we never use; MMEngine's own hooks still
#: create the FileClient it deprecates.
THIRD_PARTY_WARNINGS = (
    r'Fail to import ``MultiScaleDeformableAttention``',
    r'.*"FileClient" will be deprecated',
    r'.*"HardDiskBackend" is the alias of "LocalBackend"',
)
_LOG_NOISE = ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias of')


class ThirdPartyLogFilter(logging.Filter):
    """Drops MMEngine's FileClient deprecation lines (emitted by its own hooks)."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        message = record.getMessage()
        return not any(noise in message for noise in _LOG_NOISE)


def quiet_third_party(logger: Optional[logging.Logger] = None) -> None:
    """Silence the third-party warnings listed in :data:`THIRD_PARTY_WARNINGS`.

    Python warnings are filtered process-wide (call this before importing
    mmcv / mmpretrain); with ``logger``, its log lines of the same kind are
    filtered too. Our own warnings are untouched.

    Args:
        logger (logging.Logger, optional): A logger (e.g. a Runner's
            ``MMLogger``) to attach :class:`ThirdPartyLogFilter` to.
            Defaults to None.
    """
    for pattern in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings('ignore', message=pattern)
    if logger is not None and not any(
        isinstance(f, ThirdPartyLogFilter) for f in getattr(logger, 'filters', [])
    ):
        logger.addFilter(ThirdPartyLogFilter())


def add_debug_argument(parser) -> None:
    """Add ``--debug`` (traceback of user errors) to an ``argparse`` parser."""
    parser.add_argument('--debug', action='store_true', help=DEBUG_HELP)


def positive_int(text: str) -> int:
    """``argparse`` type: a positive integer (otherwise a usage error naming the value)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def non_negative_int(text: str) -> int:
    """``argparse`` type: an integer >= 0 (otherwise a usage error naming the value)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text!r}')
    return value


def check_device(device: Optional[str]) -> None:
    """Refuse a CUDA ``--device`` on a machine without CUDA (a :class:`ConfigError`)."""
    if device is None or not str(device).startswith('cuda'):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f'--device {device}: CUDA is not available here; use --device cpu.')


def format_user_error(exc: BaseException, tool: Optional[str] = None) -> str:
    """The block printed for a user error.

    Args:
        exc (BaseException): The error.
        tool (str, optional): The tool's name for the first line. Defaults to
            None (the script name).

    Returns:
        str: ``<tool>: <kind>`` then the message indented, then the
        ``--debug`` hint.
    """
    tool = tool or os.path.basename(sys.argv[0] or 'mmdmpt')
    kind = getattr(exc, 'kind', 'error')
    body = '\n'.join('  ' + line if line else '' for line in user_error_message(exc).split('\n'))
    return f'{tool}: {kind}\n{body}\n  (run with --debug to see the traceback)\n'


def _debug_requested(argv: Sequence[str]) -> bool:
    return '--debug' in argv or os.environ.get('MMDMPT_DEBUG', '') not in ('', '0')


def run_tool(
    main: Callable[[Optional[List[str]]], Optional[int]],
    argv: Optional[Sequence[str]] = None,
    tool: Optional[str] = None,
) -> int:
    """Run a tool's ``main`` and turn user errors into one block and status 2.

    Args:
        main (Callable): ``main(argv)``; returns an exit status or None (0).
        argv (Sequence[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).
        tool (str, optional): Name in the error block. Defaults to None.

    Returns:
        int: The exit status: ``main``'s, or 2 after a user error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_third_party()
    try:
        status = main(argv)
    except MMDMPTError as exc:
        if _debug_requested(argv):
            raise
        sys.stdout.flush()
        sys.stderr.write(format_user_error(exc, tool))
        sys.stderr.flush()
        return 2
    return 0 if status is None else int(status)
