"""RGBNT100: vehicles, each sample one strip of three tiles (RGB, NIR, TIR)."""

from typing import List

import cv2
import numpy as np

from .base import LayoutWriter, SyntheticTree


class RGBNT100Writer(LayoutWriter):
    """``rgbir/{bounding_box_train,query,bounding_box_test}/{pid:04d}_c{cam:04d}_{idx:03d}.jpg``.

    Each id is seen by 4 of cameras 1-8; per (test id, camera) the first
    sample is a query, the others gallery. Vehicle tiles, default 128x256
    (strips 128x768); NIR and TIR tiles hold 3 grey channels.
    """

    code = 2
    kind = 'vehicle'
    samples_per_camera = 5
    query_per_camera = True
    top_folders = ('rgbir',)

    def write(self, tree: SyntheticTree, train: List[dict], test: List[dict]) -> None:
        """See :meth:`LayoutWriter.write`."""
        train_pids = {i['pid'] for i in train}
        for ident in train + test:
            is_train = ident['pid'] in train_pids
            cams = sorted(tree.rng(606, ident['pid']).choice(8, 4, replace=False) + 1)
            for c in cams:
                cam_cfg = tree.camera(int(c))
                for k in range(tree.samples_per_camera):
                    rgb, nir, tir = tree.sample(ident, int(c), cam_cfg, k)
                    strip = np.concatenate(
                        [
                            rgb,
                            cv2.cvtColor(nir, cv2.COLOR_GRAY2RGB),
                            cv2.cvtColor(tir, cv2.COLOR_GRAY2RGB),
                        ],
                        axis=1,
                    )
                    if is_train:
                        split_dir = 'bounding_box_train'
                    else:
                        split_dir = 'query' if k == 0 else 'bounding_box_test'
                    name = f'{ident["pid"]:04d}_c{int(c):04d}_{k:03d}.jpg'
                    tree.emit(
                        f'rgbir/{split_dir}',
                        [tree.path('rgbir', split_dir, name)],
                        [tree.encode(strip)],
                    )
