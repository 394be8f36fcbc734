"""WMVeID863 (MSVWild863): vehicles in the wild, per-identity folders."""

import os.path as osp
import re
from typing import Dict, Optional

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset
from .names import bad_name_error

DATASET_NAME = 'WMVeID863'
NAME_PATTERN = (
    'a name holding v<camera> and n<night 0|1>, e.g. {vid:04d}_v{cam}_n{night}_{idx:03d}.jpg'
)
_CAM_RE = re.compile(r'v([0-9]+)')
_NIGHT_RE = re.compile(r'n([0-9])')


def parse_wmveid863_name(name: str, path: Optional[str] = None) -> Dict[str, int]:
    """Read the camera and the night flag from a WMVeID863 image name.

    As the public loaders do, the camera is the first ``v<digits>`` and the
    night flag the first ``n<digit>`` found anywhere in the name (the id is
    the folder's); e.g. ``0001_v2_n1_004.jpg``. Digits are ASCII only.

    Args:
        name (str): The file name (no directory part).
        path (str, optional): The file, for the message. Defaults to None
            (``name``).

    Returns:
        dict: ``camid`` (as written) and ``night``.

    Raises:
        ValueError: ``'WMVeID863: cannot parse image name ...'`` naming the
            file, the missing field and the expected pattern.
    """
    path = name if path is None else path
    stem = osp.splitext(name)[0]
    cam = _CAM_RE.search(stem)
    night = _NIGHT_RE.search(stem)
    if cam is None or night is None:
        missing = 'camera field v<d>' if cam is None else 'night flag n<d>'
        raise bad_name_error(DATASET_NAME, NAME_PATTERN, path, f'no {missing}')
    return dict(camid=int(cam.group(1)), night=int(night.group(1)))


@DATASETS.register_module()
class WMVeID863(BaseMultiModalReIDDataset):
    """WMVeID863 (also MSVWild863) multi-spectral vehicle ReID benchmark.

    Official layout (``data_root`` points at ``WMVeID863/``)::

        {train,query,test}/<vid>/{vis,ni,th}/<name>.jpg     # test = gallery

    The release documents no full name format; the public loaders read the
    camera from the first ``v<digits>`` and the night flag from the first
    ``n<digit>`` found anywhere in the name, and so does this class (the
    camera is stored as written: this family of sets numbers views from 0).
    A name needs both fields, e.g. ``0001_v2_n1_004.jpg`` as written by the
    synthetic generator (``{vid:04d}_v{cam}_n{night}_{idx:03d}.jpg``); see
    :func:`parse_wmveid863_name`. The id is the folder name. Modalities are
    paired by FILE NAME (the public loaders pair by listing order, which is
    not guaranteed); a missing modality file is an error. Samples carry
    ``night`` (0 or 1) in their data info. Same-id-same-camera evaluation
    rule.

    Args:
        data_root (str): The ``WMVeID863/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset`.
    """

    DATASET_NAME = DATASET_NAME
    SPLIT_FOLDERS = {'train': 'train', 'query': 'query', 'gallery': 'test'}
    MODALITY_FOLDERS = {'rgb': 'vis', 'nir': 'ni', 'tir': 'th'}
    NAME_PATTERN = NAME_PATTERN

    def _parse(self, name: str, path: str, pid: int) -> dict:
        return parse_wmveid863_name(name, path)

    def _load_raw_split(self, split: str) -> list:
        """List one split of per-id folders (see the base class)."""
        return self._load_id_folders(split, self._parse)
