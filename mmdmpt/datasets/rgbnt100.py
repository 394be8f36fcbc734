"""RGBNT100: vehicles, the three modalities side by side in one strip."""

import os.path as osp
import re
from typing import Dict, List, Optional

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset, list_image_names
from .names import parse_id_camera

DATASET_NAME = 'RGBNT100'
NAME_PATTERN = '{pid:04d}_c{cam:04d}_{idx:03d}.jpg (cam >= 1)'
# id, camera, then anything after an underscore (ASCII digits only)
_NAME_RE = re.compile(r'([0-9]+)_c([0-9]+)(?:_.*)?')


def parse_rgbnt100_name(name: str, path: Optional[str] = None) -> Dict[str, int]:
    """Read the id and the camera from an RGBNT100 image name.

    A name reads ``{pid:04d}_c{cam:04d}_{idx:03d}.jpg`` (e.g.
    ``0561_c0001_006.jpg``): the id is the leading number, the camera the
    number after ``_c`` (1-based on disk); whatever follows an underscore
    after the camera is not used. Digits are ASCII only.

    Args:
        name (str): The file name (no directory part).
        path (str, optional): The file, for the message. Defaults to None
            (``name``).

    Returns:
        dict: ``gt_label`` (the raw id) and ``camid`` (0-based).

    Raises:
        DataError: ``'RGBNT100: cannot parse image name ...'`` naming the
            file and the expected pattern, when the name does not match or
            its camera is 0.
    """
    return parse_id_camera(name, _NAME_RE, DATASET_NAME, NAME_PATTERN, path)


@DATASETS.register_module()
class RGBNT100(BaseMultiModalReIDDataset):
    """RGBNT100 multi-modal vehicle ReID benchmark.

    Official layout (``data_root`` points at ``RGBNT100/``)::

        rgbir/bounding_box_train/<name>.jpg
        rgbir/query/<name>.jpg
        rgbir/bounding_box_test/<name>.jpg      # the gallery

    Each image is a strip of ``NUM_TILES`` = 3 tiles side by side, left to
    right RGB, NIR, TIR (each tile 128 high and 256 wide; the strip 768
    wide). A sample's ``img_paths`` repeats the strip path once per selected
    modality and ``tile_indices`` gives each modality's tile; the loader
    (:class:`LoadMultiModalImages`) decodes the strip once and crops the
    tiles (give it ``tile_width=256`` to reject strips of another width, as
    the configs do). A name reads ``{pid:04d}_c{cam:04d}_{idx:03d}.jpg``
    (e.g. ``0561_c0001_006.jpg``); cameras are 1-based on disk, stored
    0-based (see :func:`parse_rgbnt100_name`).

    Args:
        data_root (str): The ``RGBNT100/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset`.
    """

    DATASET_NAME = DATASET_NAME
    SPLIT_FOLDERS = {
        'train': 'rgbir/bounding_box_train',
        'query': 'rgbir/query',
        'gallery': 'rgbir/bounding_box_test',
    }
    #: Tile index of each modality within a strip.
    TILE_INDICES = {'rgb': 0, 'nir': 1, 'tir': 2}
    NUM_TILES = 3
    #: Tile size (height, width) of the official release.
    TILE_SIZE = (128, 256)
    NAME_PATTERN = NAME_PATTERN

    def _load_raw_split(self, split: str) -> List[dict]:
        """List one ``rgbir/`` folder (see the base class)."""
        root = self._split_dir(split)
        tiles = [self.TILE_INDICES[m] for m in self.modalities]
        records = []
        for name in list_image_names(root):
            path = osp.join(root, name)
            fields = parse_rgbnt100_name(name, path)
            records.append(
                dict(
                    img_paths=[path] * len(self.modalities),
                    tile_indices=list(tiles),
                    num_tiles=self.NUM_TILES,
                    gt_label=fields['gt_label'],
                    camid=fields['camid'],
                )
            )
        return records
