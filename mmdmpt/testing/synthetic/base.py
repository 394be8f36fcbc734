"""What every layout writer shares: the tree being written and the writer interface."""

import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .drawing import camera, encode_jpeg, noise_bank, render, seeded_rng


class SyntheticTree:
    """One tree being written: draws samples, encodes them and counts them.

    Args:
        out_dir (str): The dataset root.
        seed (int): The tree's seed.
        code (int): The layout's seed code (:attr:`LayoutWriter.code`).
        kind (str): ``'person'`` or ``'vehicle'``.
        size (tuple[int, int]): Image (tile) height and width.
        samples_per_camera (int): Samples per (id, camera).
        quality (int): JPEG quality.
    """

    def __init__(
        self,
        out_dir: str,
        seed: int,
        code: int,
        kind: str,
        size: Tuple[int, int],
        samples_per_camera: int,
        quality: int,
    ) -> None:
        self.out_dir = out_dir
        self.seed = seed
        self.code = code
        self.kind = kind
        self.size = size
        self.samples_per_camera = samples_per_camera
        self.quality = quality
        self.bank = noise_bank(seed, size)
        #: Samples written per split folder.
        self.counts: Dict[str, int] = {}

    def rng(self, *keys: int) -> np.random.Generator:
        """A generator of ``(seed, layout code, *keys)``, e.g. to pick cameras."""
        return seeded_rng(self.seed, self.code, *keys)

    def camera(self, cam: int) -> dict:
        """The settings of camera (or scene and view) ``cam`` of this layout."""
        return camera(self.seed, self.code, cam, self.kind)

    def sample(
        self, identity: dict, cam_key: int, cam: dict, k: int, night: bool = False
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw the ``k``-th sample of ``identity`` by camera ``cam_key``.

        Args:
            identity (dict): From :func:`~.drawing.make_identities`.
            cam_key (int): The camera key the sample's seed depends on.
            cam (dict): The camera's settings (:meth:`camera`).
            k (int): The sample's number for this (identity, camera).
            night (bool): A night capture. Defaults to False.

        Returns:
            tuple: RGB ``HxWx3``, NIR ``HxW`` and TIR ``HxW`` uint8 images.
        """
        rng = seeded_rng(self.seed, self.code, 505, identity['pid'], cam_key, k)
        return render(identity, self.kind, self.size, cam, rng, self.bank, night=night)

    def encode(self, img: np.ndarray) -> bytes:
        """JPEG bytes of one image at the tree's quality."""
        return encode_jpeg(img, self.quality)

    def encode_all(self, rgb: np.ndarray, nir: np.ndarray, tir: np.ndarray) -> List[bytes]:
        """JPEG bytes of the three images of a sample, in modality order."""
        return [self.encode(rgb), self.encode(nir), self.encode(tir)]

    def emit(self, split_dir: str, paths: Sequence[str], images: Sequence[bytes]) -> None:
        """Write the files of one sample and count it under ``split_dir``.

        Args:
            split_dir (str): The folder the sample is counted under (the key
                of ``num_samples`` in the summary).
            paths (Sequence[str]): The files to write.
            images (Sequence[bytes]): Their contents, one per path.
        """
        for path, data in zip(paths, images):
            os.makedirs(osp.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(data)
        self.counts[split_dir] = self.counts.get(split_dir, 0) + 1

    def path(self, *parts: str) -> str:
        """A path under the dataset root."""
        return osp.join(self.out_dir, *parts)


class LayoutWriter:
    """Writes the samples of one benchmark's official layout.

    Subclasses set the class attributes and implement :meth:`write`; they
    are registered by name in ``WRITERS`` (``generator.py``).

    Args:
        variant (str, optional): The layout's variant, one of
            :attr:`variants`; only for layouts that have some. Defaults to
            None (the first variant, if any).
    """

    #: Seed code of the layout: part of every seed, so it must never change.
    code: int = 0
    #: ``'person'`` or ``'vehicle'``.
    kind: str = 'vehicle'
    #: Default identities in total.
    num_ids: int = 60
    #: Default samples per (id, camera).
    samples_per_camera: int = 5
    #: Whether one sample per (test id, camera) goes to the query folder and
    #: the others to the gallery (then ``samples_per_camera`` must be >= 2).
    query_per_camera: bool = False
    #: The folders under the root the layout writes (replaced on overwrite).
    top_folders: Tuple[str, ...] = ()
    #: The layout's variants, the first the default; empty if it has none.
    variants: Tuple[str, ...] = ()

    def __init__(self, variant: Optional[str] = None) -> None:
        if variant is not None and variant not in self.variants:
            raise ValueError(f'{type(self).__name__} has no variant {variant!r}: {self.variants}')
        self.variant = variant if variant is not None or not self.variants else self.variants[0]

    def write(self, tree: SyntheticTree, train: List[dict], test: List[dict]) -> None:
        """Write every sample of the train and test identities.

        Args:
            tree (SyntheticTree): Where and how to draw and write.
            train (list[dict]): The training identities, by raw id.
            test (list[dict]): The test identities, by raw id.
        """
        raise NotImplementedError
