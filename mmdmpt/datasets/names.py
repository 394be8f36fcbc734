r"""Shared pieces of the benchmarks' image-name parsers.

Each benchmark module has a module-level ``parse_<benchmark>_name`` function
that returns the fields read from one image name or raises the
:func:`bad_name_error` below. Digits are ASCII only (``[0-9]``): Python's
``\d`` and ``int`` would also accept other scripts' digits (e.g. ``'٣'`` or a
full-width ``'３'``) and so read a foreign name as a valid id.
"""

import os.path as osp
import re
from typing import Dict, Optional

from mmdmpt.utils.errors import DataError


def bad_name_error(dataset: str, pattern: str, path: str, reason: str = '') -> DataError:
    """The error of an image name that does not parse.

    Args:
        dataset (str): The benchmark name, e.g. ``'RGBNT201'``.
        pattern (str): The expected name pattern, for the message.
        path (str): The image (its base name is quoted first).
        reason (str): What is wrong, when more precise than "no match".
            Defaults to ``''``.

    Returns:
        DataError: ``'<dataset>: cannot parse image name <name> at <path>
        (<reason>); expected the pattern <pattern>'`` (a user error, and a
        ``ValueError``).
    """
    extra = f' ({reason})' if reason else ''
    return DataError(
        f'{dataset}: cannot parse image name {osp.basename(path)!r} at {path}{extra}; '
        f'expected the pattern {pattern!r}'
    )


def parse_id_camera(
    name: str, regex: re.Pattern, dataset: str, pattern: str, path: Optional[str] = None
) -> Dict[str, int]:
    """Read ``(id, 1-based camera)`` from a name whose stem ``regex`` matches whole.

    The shared body of the RGBNT201 and RGBNT100 parsers: group 1 of
    ``regex`` is the id, group 2 the camera, numbered from 1 on disk.

    Args:
        name (str): The file name (no directory part).
        regex (re.Pattern): Matched against the name without its extension.
        dataset (str): The benchmark name, for the message.
        pattern (str): The expected name pattern, for the message.
        path (str, optional): The file, for the message. Defaults to None
            (``name``).

    Returns:
        dict: ``gt_label`` (the raw id) and ``camid`` (0-based).

    Raises:
        DataError: :func:`bad_name_error` when the name does not match or
            its camera is 0.
    """
    path = name if path is None else path
    match = regex.fullmatch(osp.splitext(name)[0])
    if match is None:
        raise bad_name_error(dataset, pattern, path)
    cam = int(match.group(2))
    if cam < 1:
        raise bad_name_error(dataset, pattern, path, f'camera {cam} is not 1-based')
    return dict(gt_label=int(match.group(1)), camid=cam - 1)
