"""WMVeID863 (MSVWild863): vehicles in the wild, per-identity folders."""

import os.path as osp
import re

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset


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
    synthetic generator (``{vid:04d}_v{cam}_n{night}_{idx:03d}.jpg``). The
    id is the folder name. Modalities are paired by FILE NAME (the public
    loaders pair by listing order, which is not guaranteed); a missing
    modality file is an error. Samples carry ``night`` (0 or 1) in their
    data info. Same-id-same-camera evaluation rule.

    Args:
        data_root (str): The ``WMVeID863/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset`.
    """

    DATASET_NAME = 'WMVeID863'
    SPLIT_FOLDERS = {'train': 'train', 'query': 'query', 'gallery': 'test'}
    MODALITY_FOLDERS = {'rgb': 'vis', 'nir': 'ni', 'tir': 'th'}
    NAME_PATTERN = (
        'a name holding v<camera> and n<night 0|1>, e.g. {vid:04d}_v{cam}_n{night}_{idx:03d}.jpg'
    )
    _CAM_RE = re.compile(r'v(\d+)')
    _NIGHT_RE = re.compile(r'n(\d)')

    def _parse(self, name: str, path: str, pid: int) -> dict:
        stem = osp.splitext(name)[0]
        cam = self._CAM_RE.search(stem)
        night = self._NIGHT_RE.search(stem)
        if cam is None or night is None:
            missing = 'camera field v<d>' if cam is None else 'night flag n<d>'
            raise self._bad_name(path, f'no {missing}')
        return dict(camid=int(cam.group(1)), night=int(night.group(1)))

    def _load_raw_split(self, split: str) -> list:
        """List one split of per-id folders (see the base class)."""
        return self._load_id_folders(split, self._parse)
