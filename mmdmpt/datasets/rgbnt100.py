"""RGBNT100: vehicles, the three modalities side by side in one strip."""

import os.path as osp
import re
from typing import List

from mmdmpt.registry import DATASETS

from .base import BaseMultiModalReIDDataset, list_image_names


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
    tiles. A name reads ``{pid:04d}_c{cam:04d}_{idx:03d}.jpg`` (e.g.
    ``0561_c0001_006.jpg``); cameras are 1-based on disk, stored 0-based.

    Args:
        data_root (str): The ``RGBNT100/`` folder.
        **kwargs: See :class:`BaseMultiModalReIDDataset`.
    """

    DATASET_NAME = 'RGBNT100'
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
    NAME_PATTERN = '{pid:04d}_c{cam:04d}_{idx:03d}.jpg (cam >= 1)'
    _NAME_RE = re.compile(r'^(\d+)_c(\d+)(?:_.*)?$')

    def _load_raw_split(self, split: str) -> List[dict]:
        """List one ``rgbir/`` folder (see the base class)."""
        root = self._split_dir(split)
        tiles = [self.TILE_INDICES[m] for m in self.modalities]
        records = []
        for name in list_image_names(root):
            path = osp.join(root, name)
            match = self._NAME_RE.match(osp.splitext(name)[0])
            if match is None:
                raise self._bad_name(path)
            cam = int(match.group(2))
            if cam < 1:
                raise self._bad_name(path, f'camera {cam} is not 1-based')
            records.append(
                dict(
                    img_paths=[path] * len(self.modalities),
                    tile_indices=list(tiles),
                    num_tiles=self.NUM_TILES,
                    gt_label=int(match.group(1)),
                    camid=cam - 1,
                )
            )
        return records
