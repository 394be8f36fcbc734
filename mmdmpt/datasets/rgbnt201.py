"""RGBNT201: persons, RGB / NIR / TIR as separate aligned files."""

import os.path as osp
import re
from typing import List

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset, pair_by_name


@DATASETS.register_module()
class RGBNT201(BaseMultiModalReIDDataset):
    """RGBNT201 multi-modal person ReID benchmark.

    Official layout (``data_root`` points at ``RGBNT201/``)::

        train_171/{RGB,NI,TI}/<name>.jpg
        test/{RGB,NI,TI}/<name>.jpg

    The three modalities of a sample share one file name. A name reads
    ``{pid:06d}_cam{c}_{x}_{idx:02d}.jpg`` (e.g. ``000028_cam1_0_02.jpg``):
    the id is the leading number and the camera the number after ``cam``
    (1-based on disk, stored 0-based); the fields after the camera are not
    used. Query and gallery are both ``test/``, so the ``'test'`` split holds
    every test sample twice: once as query, once as gallery.

    Args:
        data_root (str): The ``RGBNT201/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset` (``split='train'``,
            ``modalities=('rgb', 'nir', 'tir')``, ``pipeline=()``,
            ``val_fraction=0.0``, ``val_seed=0``, ...).
    """

    DATASET_NAME = 'RGBNT201'
    SPLIT_FOLDERS = {'train': 'train_171', 'query': 'test', 'gallery': 'test'}
    MODALITY_FOLDERS = {'rgb': 'RGB', 'nir': 'NI', 'tir': 'TI'}
    NAME_PATTERN = '{pid:06d}_cam{c}_{x}_{idx:02d}.jpg (c >= 1)'
    _NAME_RE = re.compile(r'^(\d+)_cam(\d+)(?:_.*)?$')

    def _load_raw_split(self, split: str) -> List[dict]:
        """List ``train_171/`` or ``test/`` (see the base class)."""
        root = self._split_dir(split)
        folders = {m: osp.join(root, self.MODALITY_FOLDERS[m]) for m in self.modalities}
        names = pair_by_name(folders, f'{self.DATASET_NAME} split {split!r}')
        records = []
        for name in names:
            match = self._NAME_RE.match(osp.splitext(name)[0])
            first = osp.join(folders[self.modalities[0]], name)
            if match is None:
                raise self._bad_name(first)
            cam = int(match.group(2))
            if cam < 1:
                raise self._bad_name(first, f'camera {cam} is not 1-based')
            records.append(
                dict(
                    img_paths=[osp.join(folders[m], name) for m in self.modalities],
                    tile_indices=None,
                    gt_label=int(match.group(1)),
                    camid=cam - 1,
                )
            )
        return records
