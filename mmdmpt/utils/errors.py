"""The exception types of user errors.

A *user error* is a mistake in what the user gave us: a config value or key,
a data tree, a checkpoint file, a command-line argument. Library code raises
one of the types below as early as it can, with a message that names the
key or path, says what was found and what was expected and, where it helps,
how to fix it. The tools print such an error as one block and exit with
status 2 (:func:`mmdmpt.utils.cli.run_tool`); anything else is an internal
error and keeps its traceback.

Each type also derives from the built-in exception a caller would expect
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so
``except ValueError`` keeps working. Every type takes one message argument,
which lets PyTorch's dataloader workers re-raise it in the main process.
"""

import re

__all__ = [
    'MMDMPTError',
    'ConfigError',
    'DataError',
    'DataNotFoundError',
    'CheckpointError',
    'user_error_message',
    'TrainingError',
]


class MMDMPTError(Exception):
    """Base class of the user errors of mmdmpt.

    Attributes:
        kind (str): What kind of input was wrong, shown as the first line of
            the tools' error block.
    """

    kind = 'error'


class ConfigError(MMDMPTError, ValueError):
    """A config value, config key or command-line option is wrong."""

    kind = 'config error'


class DataError(MMDMPTError, ValueError):
    """The data are not what the config says (names, splits, images)."""

    kind = 'data error'


class DataNotFoundError(MMDMPTError, FileNotFoundError):
    """A data root, split folder, modality folder or image file is missing."""

    kind = 'data error'


class CheckpointError(MMDMPTError, RuntimeError):
    """A checkpoint or weight file is missing, unreadable or does not fit."""

    kind = 'checkpoint error'


_WORKER_PREFIX = re.compile(r'^Caught \w+ in DataLoader worker process \d+\.\s*', re.S)
_REGISTRY_PREFIX = re.compile(r'class `(\w+)` in [\w.]+: ')


def user_error_message(exc: BaseException) -> str:
    """The message of a user error, without the wrappers added on its way up.

    Two wrappers are removed:

    * PyTorch's dataloader workers re-raise an error in the main process with
      the worker's whole traceback in the message; only the original message
      is kept, so the error is reported once;
    * MMEngine's registry prefixes ``class `Name` in package.module: `` for
      every nested build; it is shortened to ``Name: ``.

    Args:
        exc (BaseException): The error.

    Returns:
        str: The cleaned message.
    """
    text = str(exc)
    if _WORKER_PREFIX.match(text) and 'Original Traceback' in text:
        name = type(exc).__name__
        lines = text.rstrip('\n').split('\n')
        for i in range(len(lines) - 1, -1, -1):
            head = lines[i]
            for prefix in (f'{type(exc).__module__}.{name}: ', f'{name}: '):
                if head.startswith(prefix):
                    text = '\n'.join([head[len(prefix) :]] + lines[i + 1 :])
                    break
            else:
                continue
            break
    return _REGISTRY_PREFIX.sub(r'\1: ', text).strip()


class TrainingError(MMDMPTError, FloatingPointError):
    """Training cannot go on: a non-finite loss (the run diverged).

    Raised by :class:`~mmdmpt.engine.NonFiniteCheckOptimWrapper` before the
    optimizer step; the message names the iteration and the loss terms, and
    how to go on (a lower learning rate, ``optim_wrapper.on_nonfinite='skip'``).
    Its traceback would only point at the optimizer wrapper, so the tools
    print it as one block. Still a ``FloatingPointError``.
    """

    kind = 'training error'
