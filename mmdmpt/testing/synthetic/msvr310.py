"""MSVR310: vehicles in per-id folders, with scene ids; queries also in the gallery."""

from typing import List

from .base import LayoutWriter, SyntheticTree


class MSVR310Writer(LayoutWriter):
    """``{bounding_box_train,query3,bounding_box_test}/<vid:04d>/{vis,ni,th}/...``.

    Names ``{vid:04d}_s{scene:03d}_v{view}_{idx:03d}.jpg``; each id has 3
    scenes (numbered over the whole tree) seen by 2 of views 0-7; ``query3``
    holds one sample per (test id, scene), also present in
    ``bounding_box_test``.
    """

    code = 3
    kind = 'vehicle'
    samples_per_camera = 3
    top_folders = ('bounding_box_train', 'query3', 'bounding_box_test')
    #: Modality folders, in modality order (RGB, NIR, TIR).
    folders = ('vis', 'ni', 'th')

    def write(self, tree: SyntheticTree, train: List[dict], test: List[dict]) -> None:
        """See :meth:`LayoutWriter.write`."""
        train_pids = {i['pid'] for i in train}
        scene = 0
        for ident in train + test:
            is_train = ident['pid'] in train_pids
            vid = ident['pid']
            idx = 0
            for s in range(3):
                scene += 1
                views = sorted(tree.rng(707, vid, s).choice(8, 2, replace=False))
                for v in views:
                    # a scene is its own capture: camera from (scene, view)
                    cam_key = 1000 * scene + int(v)
                    cam_cfg = tree.camera(cam_key)
                    for k in range(tree.samples_per_camera):
                        name = f'{vid:04d}_s{scene:03d}_v{int(v)}_{idx:03d}.jpg'
                        idx += 1
                        data = tree.encode_all(*tree.sample(ident, cam_key, cam_cfg, k))
                        dirs = ['bounding_box_train'] if is_train else ['bounding_box_test']
                        if not is_train and v == views[0] and k == 0:
                            dirs.append('query3')
                        for d in dirs:
                            paths = [tree.path(d, f'{vid:04d}', f, name) for f in self.folders]
                            tree.emit(d, paths, data)
