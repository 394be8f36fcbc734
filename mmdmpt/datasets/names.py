r"""Shared pieces of the benchmarks' image-name parsers.

Each benchmark module has a module-level ``parse_<benchmark>_name`` function
that returns the fields read from one image name or raises the
:func:`bad_name_error` below. Digits are ASCII only (``[0-9]``): Python's
``\d`` and ``int`` would also accept other scripts' digits (e.g. ``'٣'`` or a
full-width ``'３'``) and so read a foreign name as a valid id.
"""

import os.path as osp


def bad_name_error(dataset: str, pattern: str, path: str, reason: str = '') -> ValueError:
    """The error of an image name that does not parse.

    Args:
        dataset (str): The benchmark name, e.g. ``'RGBNT201'``.
        pattern (str): The expected name pattern, for the message.
        path (str): The image (its base name is quoted first).
        reason (str): What is wrong, when more precise than "no match".
            Defaults to ``''``.

    Returns:
        ValueError: ``'<dataset>: cannot parse image name <name> at <path>
        (<reason>); expected the pattern <pattern>'``.
    """
    extra = f' ({reason})' if reason else ''
    return ValueError(
        f'{dataset}: cannot parse image name {osp.basename(path)!r} at {path}{extra}; '
        f'expected the pattern {pattern!r}'
    )
