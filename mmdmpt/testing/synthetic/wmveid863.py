"""WMVeID863: vehicles by day and night, in any of the three public layouts."""

from typing import Dict, List, Tuple

from .base import LayoutWriter, SyntheticTree

#: Variant -> (structure, gallery folder), the first the default. The writer's
#: own copy of the layouts :class:`mmdmpt.datasets.WMVeID863` reads; the tests
#: check that the two agree.
VARIANTS: Dict[str, Tuple[str, str]] = {
    'id_folders': ('id_folders', 'test'),
    'flat': ('flat', 'test'),
    'id_folders_gallery': ('id_folders', 'gallery'),
}


class WMVeID863Writer(LayoutWriter):
    """``{train,query,test}/<vid:04d>/{vis,ni,th}/{vid:04d}_v{cam}_n{night}_{idx:03d}.jpg``.

    Each id is seen by 3 of cameras 0-5, each (id, camera) capture by night
    with probability 0.3; per (test id, camera) the first sample is a query,
    the others gallery. The variant ``'flat'`` writes the same samples to
    ``{train,query,test}/{vis,ni,th}/{vid:04d}_cam{cam + 1}_n{night}_{idx:03d}.jpg``
    (no id folders, camera from 1); ``'id_folders_gallery'`` names the
    gallery folder ``gallery/`` instead of ``test/``. The image bytes are the
    same in the three variants.

    Args:
        variant (str, optional): One of :data:`VARIANTS`. Defaults to None
            (``'id_folders'``).
    """

    code = 4
    kind = 'vehicle'
    samples_per_camera = 5
    query_per_camera = True
    # both gallery folder names: a tree must never hold both (the loader refuses it)
    top_folders = ('train', 'query', 'test', 'gallery')
    variants = tuple(VARIANTS)
    #: Modality folders, in modality order (RGB, NIR, TIR).
    folders = ('vis', 'ni', 'th')

    def write(self, tree: SyntheticTree, train: List[dict], test: List[dict]) -> None:
        """See :meth:`LayoutWriter.write`."""
        structure, gallery_dir = VARIANTS[self.variant]
        train_pids = {i['pid'] for i in train}
        for ident in train + test:
            is_train = ident['pid'] in train_pids
            vid = ident['pid']
            cam_rng = tree.rng(808, vid)
            cams = sorted(cam_rng.choice(6, 3, replace=False))
            idx = 0
            for c in cams:
                night = int(cam_rng.random() < 0.3)
                cam_cfg = tree.camera(int(c))
                for k in range(tree.samples_per_camera):
                    if structure == 'flat':  # id and 1-based camera in the name
                        name = f'{vid:04d}_cam{int(c) + 1}_n{night}_{idx:03d}.jpg'
                    else:
                        name = f'{vid:04d}_v{int(c)}_n{night}_{idx:03d}.jpg'
                    idx += 1
                    data = tree.encode_all(*tree.sample(ident, int(c), cam_cfg, k, bool(night)))
                    split_dir = 'train' if is_train else ('query' if k == 0 else gallery_dir)
                    sub = (split_dir,) if structure == 'flat' else (split_dir, f'{vid:04d}')
                    tree.emit(split_dir, [tree.path(*sub, f, name) for f in self.folders], data)
