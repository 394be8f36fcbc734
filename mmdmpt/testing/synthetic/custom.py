"""Custom layouts: one's own modalities in folders or behind an annotation file.

:func:`make_custom_synthetic` writes a synthetic identity set the way a user
of :class:`~mmdmpt.datasets.MultiModalReIDFolder` would lay out their own
cameras' data, with any modality names:

- ``layout='folder'``: ``<root>/{train,query,gallery}/<modality folder>/<name>.jpg``
  with ``<name>`` = ``{pid:04d}_c{cam}_{idx:03d}`` (or ``{pid:04d}_{idx:03d}``
  without cameras); a sample lacking a modality has no file in that folder.
- ``layout='csv'``: the images under ``<root>/images/<split>/<modality
  folder>/`` and ``<root>/annotations.csv`` with the columns ``split``,
  ``pid``, ``camid`` (empty without cameras) and one path column per
  modality (empty where the sample lacks it).

Each modality shows a *cue* of the identity: ``'rgb'``, ``'nir'`` and
``'tir'`` (the drawings of the benchmark layouts, see :mod:`.drawing`) or
``'extra'``: a grey image whose object (the warm part of the thermal drawing)
carries four horizontal bands with levels drawn per identity and per
modality name, so that a fourth (or fifth ...) modality adds information of
its own. By default ``rgb``/``nir``/``tir`` show their own cue and every
other name the extra cue (``cues`` changes it, e.g. ``{'depth': 'tir'}``).

Splits: whole families of identities go to training or testing
(:func:`~.drawing.split_ids`); every identity is seen by cameras
``1 .. num_cameras`` with ``samples_per_camera`` samples each; for a test
identity the first sample of each camera is a query and the others are the
gallery. With ``num_cameras=0`` (data without cameras) every sample has its
own viewpoint, the first sample of a test identity is its query, and the
evaluation must remove nothing (``removal_rule='none'``).
"""

import csv
import io
import json
import os
import os.path as osp
import shutil
import zlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.logging import print_log

from mmdmpt.structures.modalities import MODALITIES, check_modalities
from mmdmpt.utils.errors import ConfigError

from .base import LayoutWriter, SyntheticTree
from .drawing import PERSON_SIZE, VEHICLE_SIZE, make_identities, seeded_rng, split_ids

__all__ = ['CUSTOM_LAYOUTS', 'CUES', 'CustomWriter', 'make_custom_synthetic']

#: The custom layouts (see the module docstring).
CUSTOM_LAYOUTS = ('folder', 'csv')
#: The cues a modality can show: the drawings of the benchmarks' modalities, or 'extra'.
CUES = MODALITIES + ('extra',)
#: Name of the annotation file of the ``'csv'`` layout.
ANNOTATION_FILE = 'annotations.csv'
_BAND_LEVELS = (50.0, 110.0, 170.0, 230.0)


def _extra_cue(tir: np.ndarray, pid: int, name: str, seed: int, id_offset: int) -> np.ndarray:
    """The extra cue of modality ``name``: identity-coded bands on the warm object."""
    code = seeded_rng(seed, id_offset, 606, pid, zlib.crc32(name.encode())).integers(0, 4, size=4)
    height = tir.shape[0]
    band = np.minimum(np.arange(height) * 4 // height, 3)
    levels = np.array(_BAND_LEVELS, dtype=np.float32)[code[band]]
    warm = tir.astype(np.float32) > 90.0
    img = np.where(warm, levels[:, None], 0.35 * tir.astype(np.float32))
    return np.clip(img, 0, 255).astype(np.uint8)


class CustomWriter(LayoutWriter):
    """Writes the ``'folder'`` or ``'csv'`` custom layout (see the module docstring).

    Args:
        variant (str): ``'folder'`` or ``'csv'``.
        modalities (Sequence[str]): Modality names, in order.
        modality_dirs (Mapping[str, str]): Modality -> folder name.
        cues (Mapping[str, str]): Modality -> cue (one of :data:`CUES`).
        num_cameras (int): Cameras per identity; 0 for none.
        missing (float): Probability that a sample lacks a given modality
            (at least one is always kept).
        seed (int): The tree's seed (for the extra cue).
        id_offset (int): The tree's first raw id (for the extra cue).
    """

    code = 5
    kind = 'person'
    samples_per_camera = 3
    query_per_camera = True
    variants = CUSTOM_LAYOUTS

    def __init__(
        self,
        variant: str,
        modalities: Sequence[str],
        modality_dirs: Mapping[str, str],
        cues: Mapping[str, str],
        num_cameras: int,
        missing: float,
        seed: int,
        id_offset: int,
    ) -> None:
        super().__init__(variant)
        self.modalities = tuple(modalities)
        self.modality_dirs = dict(modality_dirs)
        self.cues = dict(cues)
        self.num_cameras = int(num_cameras)
        self.missing = float(missing)
        self.seed = int(seed)
        self.id_offset = int(id_offset)
        self.rows: List[Dict[str, str]] = []
        self.num_lacking = 0

    @property
    def top_folders(self) -> Tuple[str, ...]:  # type: ignore[override]
        """The folders (and file) the layout writes under the root."""
        if self.variant == 'csv':
            return ('images', ANNOTATION_FILE)
        return ('train', 'query', 'gallery')

    def _present(self, tree: SyntheticTree, pid: int, cam: int, k: int) -> List[bool]:
        """Which modalities the sample has (random with ``missing``; at least one)."""
        if self.missing <= 0:
            return [True] * len(self.modalities)
        rng = tree.rng(808, pid, cam, k)
        present = list(rng.random(len(self.modalities)) >= self.missing)
        if not any(present):
            present[int(rng.integers(len(self.modalities)))] = True
        return present

    def _images(self, ident: dict, images: Tuple[np.ndarray, ...]) -> List[np.ndarray]:
        rgb, nir, tir = images
        drawn = {'rgb': rgb, 'nir': nir, 'tir': tir}
        out = []
        for modality in self.modalities:
            cue = self.cues[modality]
            if cue == 'extra':
                out.append(_extra_cue(tir, ident['pid'], modality, self.seed, self.id_offset))
            else:
                out.append(drawn[cue])
        return out

    def write(self, tree: SyntheticTree, train: List[dict], test: List[dict]) -> None:
        """See :meth:`LayoutWriter.write`."""
        train_pids = {i['pid'] for i in train}
        with_cams = self.num_cameras > 0
        for ident in train + test:
            pid = ident['pid']
            is_train = pid in train_pids
            for c in range(1, self.num_cameras + 1) if with_cams else (0,):
                cam_cfg = tree.camera(c) if with_cams else None
                for k in range(tree.samples_per_camera):
                    # without cameras every sample has its own viewpoint
                    cam_key = c if with_cams else 1000 + k
                    cfg = cam_cfg if with_cams else tree.camera(cam_key)
                    images = self._images(ident, tree.sample(ident, cam_key, cfg, k))
                    split = 'train' if is_train else ('query' if k == 0 else 'gallery')
                    name = f'{pid:04d}_c{c}_{k:03d}' if with_cams else f'{pid:04d}_{k:03d}'
                    present = self._present(tree, pid, c, k)
                    self.num_lacking += not all(present)
                    self._emit(tree, split, name, images, present, pid, c)
        if self.variant == 'csv':
            header = ['split', 'pid', 'camid'] + list(self.modalities)
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=header, lineterminator='\n')
            writer.writeheader()
            writer.writerows(self.rows)
            with open(tree.path(ANNOTATION_FILE), 'w', newline='') as f:
                f.write(text.getvalue())

    def _emit(
        self,
        tree: SyntheticTree,
        split: str,
        name: str,
        images: List[np.ndarray],
        present: List[bool],
        pid: int,
        cam: int,
    ) -> None:
        files, data, cells = [], [], {}
        for modality, img, keep in zip(self.modalities, images, present):
            folder = self.modality_dirs[modality]
            if self.variant == 'csv':
                rel = osp.join('images', split, folder, f'{name}.jpg')
            else:
                rel = osp.join(split, folder, f'{name}.jpg')
            cells[modality] = rel if keep else ''
            if keep:
                files.append(tree.path(rel))
                data.append(tree.encode(img))
        tree.emit(split, files, data)
        if self.variant == 'csv':
            camid = str(cam) if self.num_cameras > 0 else ''
            self.rows.append(dict(split=split, pid=str(pid), camid=camid, **cells))


def make_custom_synthetic(
    out_dir: str,
    modalities: Sequence[str] = ('rgb', 'depth'),
    layout: str = 'folder',
    modality_dirs: Optional[Mapping[str, str]] = None,
    cues: Optional[Mapping[str, str]] = None,
    num_ids: int = 24,
    train_ids: Union[int, float] = 0.5,
    samples_per_camera: int = 3,
    num_cameras: int = 3,
    missing: float = 0.0,
    seed: int = 0,
    height: Optional[int] = None,
    width: Optional[int] = None,
    kind: str = 'person',
    id_offset: int = 1,
    family_size: int = 3,
    quality: int = 95,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic identity set in a custom layout (see the module docstring).

    Args:
        out_dir (str): The dataset root.
        modalities (Sequence[str]): Modality names (any lowercase names, at
            least one). Defaults to ``('rgb', 'depth')``.
        layout (str): ``'folder'`` or ``'csv'``. Defaults to ``'folder'``.
        modality_dirs (Mapping[str, str], optional): Modality -> folder name.
            Defaults to None (the modality names, upper case).
        cues (Mapping[str, str], optional): Modality -> cue among
            :data:`CUES`. Defaults to None (own cue for rgb/nir/tir, the extra
            cue for other names).
        num_ids (int): Identities in total. Defaults to 24.
        train_ids (int | float): Training identities, a count or a fraction
            (whole families). Defaults to 0.5.
        samples_per_camera (int): Samples per (identity, camera), >= 2 (one
            query, the rest gallery). Defaults to 3.
        num_cameras (int): Cameras per identity; 0 writes data without
            cameras. Defaults to 3.
        missing (float): Probability in ``[0, 1)`` that a sample lacks a
            modality (each drawn on its own, one always kept). Defaults to 0.
        seed (int): Random seed. Defaults to 0.
        height (int, optional): Image height; None: 256 (person) / 128
            (vehicle). Defaults to None.
        width (int, optional): Image width; None: 128 / 256. Defaults to None.
        kind (str): ``'person'`` or ``'vehicle'``. Defaults to ``'person'``.
        id_offset (int): First raw id. Defaults to 1.
        family_size (int): Identities per family. Defaults to 3.
        quality (int): JPEG quality. Defaults to 95.
        overwrite (bool): Replace what the layout writes if it exists (else a
            FileExistsError). Defaults to False.

    Returns:
        dict: A summary (also written to ``out_dir/synthetic_meta.json``):
        the parameters, ``train_ids`` / ``test_ids``, ``num_samples`` per
        split, ``num_lacking`` (samples lacking a modality), and the dataset
        settings that read the tree: ``modality_dirs``, ``name_pattern``
        (folder layout), ``ann_file`` (csv layout) and ``removal_rule``.

    Raises:
        ConfigError: On a bad layout, modality name, cue or value.
        FileExistsError: If the tree exists and ``overwrite`` is False.
    """
    if layout not in CUSTOM_LAYOUTS:
        raise ConfigError(f'unknown custom layout {layout!r}; expected one of {CUSTOM_LAYOUTS}')
    modalities = check_modalities(modalities, 'modalities')
    dirs = {m: str((modality_dirs or {}).get(m, m.upper())) for m in modalities}
    cue_of = {m: (m if m in MODALITIES else 'extra') for m in modalities}
    for m, cue in (cues or {}).items():
        if m not in modalities or cue not in CUES:
            raise ConfigError(
                f'cues[{m!r}]={cue!r}: expected a modality among {modalities} and a cue among '
                f'{CUES}'
            )
        cue_of[m] = cue
    if kind not in ('person', 'vehicle'):
        raise ConfigError(f"kind must be 'person' or 'vehicle', got {kind!r}")
    if samples_per_camera < 2:
        raise ConfigError(
            f'samples_per_camera must be >= 2 (one query, the rest gallery), got '
            f'{samples_per_camera}'
        )
    if num_cameras < 0 or not 0.0 <= missing < 1.0 or num_ids < 2:
        raise ConfigError(
            f'expected num_cameras >= 0, 0 <= missing < 1 and num_ids >= 2, got '
            f'num_cameras={num_cameras}, missing={missing}, num_ids={num_ids}'
        )
    default = PERSON_SIZE if kind == 'person' else VEHICLE_SIZE
    size = (int(height or default[0]), int(width or default[1]))
    if min(size) < 32:
        raise ConfigError(f'image size must be at least 32x32, got {size}')

    writer = CustomWriter(layout, modalities, dirs, cue_of, num_cameras, missing, seed, id_offset)
    tops = [osp.join(out_dir, t) for t in writer.top_folders]
    existing = [t for t in tops if osp.exists(t)]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f'{existing[0]} already exists; pass overwrite=True to replace '
                f'{[osp.basename(t) for t in existing]}'
            )
        for t in existing:
            shutil.rmtree(t) if osp.isdir(t) else os.remove(t)
    os.makedirs(out_dir, exist_ok=True)

    identities = make_identities(num_ids, family_size, kind, seed, id_offset)
    train, test = split_ids(identities, train_ids, seed, id_offset)
    tree = SyntheticTree(out_dir, seed, writer.code, kind, size, samples_per_camera, quality)
    writer.write(tree, train, test)

    summary = dict(
        layout=f'custom_{layout}',
        modalities=list(modalities),
        modality_dirs=dirs,
        cues=cue_of,
        seed=seed,
        num_ids=num_ids,
        id_offset=id_offset,
        family_size=family_size,
        samples_per_camera=samples_per_camera,
        num_cameras=num_cameras,
        missing=missing,
        image_size=list(size),
        train_ids=[i['pid'] for i in train],
        test_ids=[i['pid'] for i in test],
        num_samples=dict(sorted(tree.counts.items())),
        num_lacking=writer.num_lacking,
        removal_rule='camera' if num_cameras > 0 else 'none',
    )
    if layout == 'folder':
        summary['name_pattern'] = (
            r'(?P<pid>\d+)_c(?P<camid>\d+)_\d+' if num_cameras > 0 else r'(?P<pid>\d+)_\d+'
        )
    else:
        summary['ann_file'] = ANNOTATION_FILE
    with open(osp.join(out_dir, 'synthetic_meta.json'), 'w') as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print_log(
        f'synthetic custom {layout} ({", ".join(modalities)}): {len(train)} train ids, '
        f'{len(test)} test ids, samples {summary["num_samples"]}, {writer.num_lacking} lacking '
        f'a modality, written to {out_dir}',
        logger='current',
    )
    return summary
