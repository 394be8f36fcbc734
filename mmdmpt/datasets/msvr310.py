"""MSVR310: vehicles in per-identity folders, with scene ids."""

import os.path as osp
import re

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset


@DATASETS.register_module()
class MSVR310(BaseMultiModalReIDDataset):
    """MSVR310 multi-spectral vehicle ReID benchmark.

    Official layout (``data_root`` points at ``MSVR310/``)::

        bounding_box_train/<vid:04d>/{vis,ni,th}/<name>.jpg
        query3/<vid:04d>/{vis,ni,th}/<name>.jpg
        bounding_box_test/<vid:04d>/{vis,ni,th}/<name>.jpg

    A name reads ``{vid:04d}_s{scene:03d}_v{view}_{idx:03d}.jpg`` (e.g.
    ``0019_s012_v0_000.jpg``): the id (it must equal the id folder), the
    scene id and the camera / view, already 0-based. Modalities are paired
    by identical file name. Samples carry ``sceneid`` and the metainfo flag
    ``has_scenes`` is True: the evaluation removes gallery samples of the
    same id and the same scene (whatever the camera). Query samples also
    appear in the gallery; that rule removes them.

    Args:
        data_root (str): The ``MSVR310/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset`.
    """

    DATASET_NAME = 'MSVR310'
    SPLIT_FOLDERS = {
        'train': 'bounding_box_train',
        'query': 'query3',
        'gallery': 'bounding_box_test',
    }
    MODALITY_FOLDERS = {'rgb': 'vis', 'nir': 'ni', 'tir': 'th'}
    NAME_PATTERN = '{vid:04d}_s{scene:03d}_v{view}_{idx:03d}.jpg'
    HAS_SCENES = True
    _NAME_RE = re.compile(r'^(\d+)_s(\d+)_v(\d+)(?:_.*)?$')

    def _parse(self, name: str, path: str, pid: int) -> dict:
        match = self._NAME_RE.match(osp.splitext(name)[0])
        if match is None:
            raise self._bad_name(path)
        if int(match.group(1)) != pid:
            raise self._bad_name(path, f'id {int(match.group(1))} differs from its folder id {pid}')
        return dict(camid=int(match.group(3)), sceneid=int(match.group(2)))

    def _load_raw_split(self, split: str) -> list:
        """List one split of per-id folders (see the base class)."""
        return self._load_id_folders(split, self._parse)
