"""RGBNT201: persons, RGB / NIR / TIR as separate aligned files."""

import os.path as osp
import re
from typing import Dict, List, Optional

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset, pair_by_name
from .names import parse_id_camera

DATASET_NAME = 'RGBNT201'
NAME_PATTERN = '{pid:06d}_cam{c}_{x}_{idx:02d}.jpg (c >= 1)'
# id, camera, then anything after an underscore (ASCII digits only)
_NAME_RE = re.compile(r'([0-9]+)_cam([0-9]+)(?:_.*)?')


def parse_rgbnt201_name(name: str, path: Optional[str] = None) -> Dict[str, int]:
    """Read the id and the camera from an RGBNT201 image name.

    A name reads ``{pid:06d}_cam{c}_{x}_{idx:02d}.jpg`` (e.g.
    ``000028_cam1_0_02.jpg``): the id is the leading number, the camera the
    number after ``cam`` (1-based on disk); whatever follows an underscore
    after the camera is not used. Digits are ASCII only.

    Args:
        name (str): The file name (no directory part).
        path (str, optional): The file, for the message. Defaults to None
            (``name``).

    Returns:
        dict: ``gt_label`` (the raw id) and ``camid`` (0-based).

    Raises:
        DataError: ``'RGBNT201: cannot parse image name ...'`` naming the
            file and the expected pattern, when the name does not match or
            its camera is 0.
    """
    return parse_id_camera(name, _NAME_RE, DATASET_NAME, NAME_PATTERN, path)


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
    used (see :func:`parse_rgbnt201_name`). Query and gallery are both
    ``test/``, so the ``'test'`` split holds every test sample twice: once as
    query, once as gallery.

    Args:
        data_root (str): The ``RGBNT201/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset` (``split='train'``,
            ``modalities=('rgb', 'nir', 'tir')``, ``pipeline=()``,
            ``val_fraction=0.0``, ``val_seed=0``, ...).
    """

    DATASET_NAME = DATASET_NAME
    SPLIT_FOLDERS = {'train': 'train_171', 'query': 'test', 'gallery': 'test'}
    MODALITY_FOLDERS = {'rgb': 'RGB', 'nir': 'NI', 'tir': 'TI'}
    NAME_PATTERN = NAME_PATTERN

    def _load_raw_split(self, split: str) -> List[dict]:
        """List ``train_171/`` or ``test/`` (see the base class)."""
        root = self._split_dir(split)
        folders = {m: osp.join(root, self.MODALITY_FOLDERS[m]) for m in self.modalities}
        names = pair_by_name(folders, f'{self.DATASET_NAME} split {split!r}')
        records = []
        for name in names:
            fields = parse_rgbnt201_name(name, osp.join(folders[self.modalities[0]], name))
            records.append(
                dict(
                    img_paths=[osp.join(folders[m], name) for m in self.modalities],
                    tile_indices=None,
                    gt_label=fields['gt_label'],
                    camid=fields['camid'],
                )
            )
        return records
