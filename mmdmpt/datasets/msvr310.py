"""MSVR310: vehicles in per-identity folders, with scene ids."""

import os.path as osp
import re
from typing import Dict, Optional

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset
from .names import bad_name_error

DATASET_NAME = 'MSVR310'
NAME_PATTERN = '{vid:04d}_s{scene:03d}_v{view}_{idx:03d}.jpg'
# id, scene, view, then anything after an underscore (ASCII digits only)
_NAME_RE = re.compile(r'([0-9]+)_s([0-9]+)_v([0-9]+)(?:_.*)?')


def parse_msvr310_name(
    name: str, path: Optional[str] = None, pid: Optional[int] = None
) -> Dict[str, int]:
    """Read the id, the scene and the view from an MSVR310 image name.

    A name reads ``{vid:04d}_s{scene:03d}_v{view}_{idx:03d}.jpg`` (e.g.
    ``0019_s012_v0_000.jpg``); the view is the camera, already 0-based;
    whatever follows an underscore after the view is not used. Digits are
    ASCII only.

    Args:
        name (str): The file name (no directory part).
        path (str, optional): The file, for the message. Defaults to None
            (``name``).
        pid (int, optional): The id of the folder holding the file; the name's
            id must equal it. Defaults to None (not checked).

    Returns:
        dict: ``gt_label`` (the raw id), ``camid`` and ``sceneid``.

    Raises:
        DataError: ``'MSVR310: cannot parse image name ...'`` naming the
            file and the expected pattern, when the name does not match or its
            id differs from ``pid``.
    """
    path = name if path is None else path
    match = _NAME_RE.fullmatch(osp.splitext(name)[0])
    if match is None:
        raise bad_name_error(DATASET_NAME, NAME_PATTERN, path)
    vid = int(match.group(1))
    if pid is not None and vid != pid:
        raise bad_name_error(
            DATASET_NAME, NAME_PATTERN, path, f'id {vid} differs from its folder id {pid}'
        )
    return dict(gt_label=vid, camid=int(match.group(3)), sceneid=int(match.group(2)))


@DATASETS.register_module()
class MSVR310(BaseMultiModalReIDDataset):
    """MSVR310 multi-spectral vehicle ReID benchmark.

    Official layout (``data_root`` points at ``MSVR310/``)::

        bounding_box_train/<vid:04d>/{vis,ni,th}/<name>.jpg
        query3/<vid:04d>/{vis,ni,th}/<name>.jpg
        bounding_box_test/<vid:04d>/{vis,ni,th}/<name>.jpg

    A name reads ``{vid:04d}_s{scene:03d}_v{view}_{idx:03d}.jpg`` (e.g.
    ``0019_s012_v0_000.jpg``): the id (it must equal the id folder), the
    scene id and the camera / view, already 0-based (see
    :func:`parse_msvr310_name`). Modalities are paired by identical file
    name. Samples carry ``sceneid`` and the metainfo flag ``has_scenes`` is
    True: the evaluation removes gallery samples of the same id and the same
    scene (whatever the camera). Query samples also appear in the gallery;
    that rule removes them.

    Args:
        data_root (str): The ``MSVR310/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset`.
    """

    DATASET_NAME = DATASET_NAME
    SPLIT_FOLDERS = {
        'train': 'bounding_box_train',
        'query': 'query3',
        'gallery': 'bounding_box_test',
    }
    MODALITY_FOLDERS = {'rgb': 'vis', 'nir': 'ni', 'tir': 'th'}
    NAME_PATTERN = NAME_PATTERN
    HAS_SCENES = True

    def _parse(self, name: str, path: str, pid: int) -> dict:
        fields = parse_msvr310_name(name, path, pid)
        return dict(camid=fields['camid'], sceneid=fields['sceneid'])

    def _load_raw_split(self, split: str) -> list:
        """List one split of per-id folders (see the base class)."""
        return self._load_id_folders(split, self._parse)
