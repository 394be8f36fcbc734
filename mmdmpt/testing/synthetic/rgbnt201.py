"""RGBNT201: persons, ``train_171`` and ``test`` with one folder per modality."""

from typing import List

from .base import LayoutWriter, SyntheticTree


class RGBNT201Writer(LayoutWriter):
    """``{train_171,test}/{RGB,NI,TI}/{pid:06d}_cam{c}_0_{idx:02d}.jpg``.

    Train ids are seen by cameras 1-4, test ids by cameras 1-2; persons,
    default 256x128. The test split is both query and gallery (the reader's
    rule).
    """

    code = 1
    kind = 'person'
    samples_per_camera = 5
    top_folders = ('train_171', 'test')
    #: Modality folders, in modality order (RGB, NIR, TIR).
    folders = ('RGB', 'NI', 'TI')
    #: The split folders and their cameras.
    splits = (('train_171', (1, 2, 3, 4)), ('test', (1, 2)))

    def write(self, tree: SyntheticTree, train: List[dict], test: List[dict]) -> None:
        """See :meth:`LayoutWriter.write`."""
        spc = tree.samples_per_camera
        for (split_dir, cams), idents in zip(self.splits, (train, test)):
            for ident in idents:
                for c in cams:
                    cam_cfg = tree.camera(c)
                    for k in range(spc):
                        name = f'{ident["pid"]:06d}_cam{c}_0_{k:02d}.jpg'
                        data = tree.encode_all(*tree.sample(ident, c, cam_cfg, k))
                        paths = [tree.path(split_dir, f, name) for f in self.folders]
                        tree.emit(split_dir, paths, data)
