"""make_synthetic: check the arguments, draw the identities, hand them to a layout's writer."""

import json
import os
import os.path as osp
import shutil
from typing import Dict, Optional, Type, Union

from mmengine.logging import print_log

from mmdmpt.utils.errors import ConfigError

from .base import LayoutWriter, SyntheticTree
from .drawing import PERSON_SIZE, VEHICLE_SIZE, make_identities, split_ids
from .msvr310 import MSVR310Writer
from .rgbnt100 import RGBNT100Writer
from .rgbnt201 import RGBNT201Writer
from .wmveid863 import WMVeID863Writer

#: Layout name -> its writer, in the order of :data:`LAYOUTS`.
WRITERS: Dict[str, Type[LayoutWriter]] = {
    'rgbnt201': RGBNT201Writer,
    'rgbnt100': RGBNT100Writer,
    'msvr310': MSVR310Writer,
    'wmveid863': WMVeID863Writer,
}
LAYOUTS = tuple(WRITERS)
#: Variants of the ``'wmveid863'`` layout (``wmveid863_layout=``), the first the default.
WMVEID863_LAYOUTS = WMVeID863Writer.variants


def make_synthetic(
    out_dir: str,
    layout: str = 'rgbnt201',
    num_ids: Optional[int] = None,
    train_ids: Union[int, float] = 0.7,
    samples_per_camera: Optional[int] = None,
    seed: int = 0,
    height: Optional[int] = None,
    width: Optional[int] = None,
    id_offset: int = 1,
    family_size: int = 3,
    quality: int = 95,
    overwrite: bool = False,
    wmveid863_layout: str = 'id_folders',
) -> dict:
    """Write a synthetic multi-spectral identity set in an official layout.

    Splits and cameras per layout (each written by its writer in
    :data:`WRITERS`; raw ids start at ``id_offset``; test ids are disjoint
    from train ids):

    - ``'rgbnt201'``: ``train_171/{RGB,NI,TI}`` (cameras 1-4) and
      ``test/{RGB,NI,TI}`` (cameras 1-2), names
      ``{pid:06d}_cam{c}_0_{idx:02d}.jpg``; persons, default 256x128.
    - ``'rgbnt100'``: ``rgbir/{bounding_box_train,query,bounding_box_test}``
      strips of 3 tiles (RGB, NIR, TIR), names
      ``{pid:04d}_c{cam:04d}_{idx:03d}.jpg``; each id seen by 4 of cameras
      1-8; one query per (test id, camera), the rest gallery; vehicle tiles,
      default 128x256 (strips 128x768).
    - ``'msvr310'``: ``{bounding_box_train,query3,bounding_box_test}/<vid:04d>/
      {vis,ni,th}``, names ``{vid:04d}_s{scene:03d}_v{view}_{idx:03d}.jpg``;
      each id has 3 scenes (globally numbered) seen by 2 of views 0-7;
      ``query3`` holds one sample per (test id, scene), also present in
      ``bounding_box_test``.
    - ``'wmveid863'``: ``{train,query,test}/<vid:04d>/{vis,ni,th}``, names
      ``{vid:04d}_v{cam}_n{night}_{idx:03d}.jpg``; each id seen by 3 of
      cameras 0-5, each (id, camera) capture by night with probability 0.3;
      one query per (test id, camera), the rest in ``test``. With
      ``wmveid863_layout='flat'`` the same samples go to
      ``{train,query,test}/{vis,ni,th}/{vid:04d}_cam{cam + 1}_n{night}_{idx:03d}.jpg``
      (no id folders; camera written from 1); with ``'id_folders_gallery'``
      the gallery folder is ``gallery/`` instead of ``test/``. The image
      bytes are the same in the three variants.

    Args:
        out_dir (str): The dataset root to write (e.g. ``data/RGBNT201``).
        layout (str): One of ``'rgbnt201'``, ``'rgbnt100'``, ``'msvr310'``,
            ``'wmveid863'``. Defaults to ``'rgbnt201'``.
        num_ids (int, optional): Identities in total. None means 60.
            Defaults to None.
        train_ids (int | float): Training identities, as a count (int) or a
            fraction in (0, 1) (float); whole families are assigned, so the
            count is met up to a family. Defaults to 0.7.
        samples_per_camera (int, optional): Samples per (id, camera) (per
            (id, scene, view) for MSVR310). None means 5 (3 for MSVR310).
            Defaults to None.
        seed (int): Random seed. Defaults to 0.
        height (int, optional): Image (tile) height; None means 256 for
            persons, 128 for vehicles. Defaults to None.
        width (int, optional): Image (tile) width; None means 128 for
            persons, 256 for vehicles. Defaults to None.
        id_offset (int): First raw id; a different offset also draws
            different identities (for a disjoint pretraining set). Defaults
            to 1.
        family_size (int): Identities per family. Defaults to 3.
        quality (int): JPEG quality. Defaults to 95.
        overwrite (bool): Replace the layout's top folders if they exist
            (else a FileExistsError); for WMVeID863 these are ``train``,
            ``query``, ``test`` and ``gallery`` whatever the variant.
            Defaults to False.
        wmveid863_layout (str): The WMVeID863 variant, one of
            :data:`WMVEID863_LAYOUTS`: ``'id_folders'``, ``'flat'`` or
            ``'id_folders_gallery'``; only for ``layout='wmveid863'``.
            Defaults to ``'id_folders'`` (the tree written before the
            option existed, byte for byte).

    Returns:
        dict: A summary (also written to ``out_dir/synthetic_meta.json``):
        layout, parameters, ``train_ids`` and ``test_ids`` (raw), ``families``
        (raw id -> [family, type]) and image counts per split folder;
        ``wmveid863_layout`` too when it is not the default (so that the
        default tree keeps its bytes).

    Raises:
        ValueError: If ``layout`` is unknown or a value is out of range
            (e.g. ``train_ids`` leaving no whole family to the test split).
        ConfigError: If ``wmveid863_layout`` is unknown, or not the default
            for another layout than ``'wmveid863'``.
        FileExistsError: If a top folder of the layout exists and
            ``overwrite`` is False.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}; expected one of {LAYOUTS}')
    if wmveid863_layout not in WMVEID863_LAYOUTS:
        raise ConfigError(
            f'unknown wmveid863_layout {wmveid863_layout!r}; expected one of {WMVEID863_LAYOUTS}'
        )
    if layout != 'wmveid863' and wmveid863_layout != WMVEID863_LAYOUTS[0]:
        raise ConfigError(
            f"wmveid863_layout={wmveid863_layout!r} only applies to layout='wmveid863', "
            f'not to layout={layout!r}'
        )
    writer_cls = WRITERS[layout]
    kind = writer_cls.kind
    num_ids = writer_cls.num_ids if num_ids is None else int(num_ids)
    spc = writer_cls.samples_per_camera if samples_per_camera is None else int(samples_per_camera)
    default_size = PERSON_SIZE if kind == 'person' else VEHICLE_SIZE
    size = (int(height or default_size[0]), int(width or default_size[1]))
    if num_ids < 2:
        raise ValueError(f'num_ids must be >= 2 (train and test ids), got {num_ids}')
    if spc < 1:
        raise ValueError(f'samples_per_camera must be >= 1, got {spc}')
    if spc < 2 and writer_cls.query_per_camera:
        raise ValueError(
            f'samples_per_camera must be >= 2 for {layout}: one sample per (test id, camera) '
            f'goes to the query folder and the others to the gallery, got {spc}'
        )
    if family_size < 1:
        raise ValueError(f'family_size must be >= 1, got {family_size}')
    if min(size) < 32:
        raise ValueError(f'image size must be at least 32x32, got {size}')
    if id_offset < 0:
        raise ValueError(f'id_offset must be >= 0, got {id_offset}')

    tops = [osp.join(out_dir, t) for t in writer_cls.top_folders]
    existing = [t for t in tops if osp.exists(t)]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f'{existing[0]} already exists; pass overwrite=True (--overwrite) to replace '
                f'{[osp.basename(t) for t in existing]}'
            )
        for t in existing:
            shutil.rmtree(t)
    os.makedirs(out_dir, exist_ok=True)

    identities = make_identities(num_ids, family_size, kind, seed, id_offset)
    train, test = split_ids(identities, train_ids, seed, id_offset)
    writer = writer_cls(wmveid863_layout if writer_cls.variants else None)
    tree = SyntheticTree(out_dir, seed, writer_cls.code, kind, size, spc, quality)
    writer.write(tree, train, test)

    summary = dict(
        layout=layout,
        seed=seed,
        num_ids=num_ids,
        id_offset=id_offset,
        family_size=family_size,
        samples_per_camera=spc,
        image_size=list(size),
        train_ids=[i['pid'] for i in train],
        test_ids=[i['pid'] for i in test],
        families={str(i['pid']): [i['family'], i['family_type']] for i in identities},
        num_samples=dict(sorted(tree.counts.items())),
    )
    if wmveid863_layout != WMVEID863_LAYOUTS[0]:
        summary['wmveid863_layout'] = wmveid863_layout
    with open(osp.join(out_dir, 'synthetic_meta.json'), 'w') as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print_log(
        f'synthetic {layout}: {len(train)} train ids, {len(test)} test ids, samples per folder '
        f'{summary["num_samples"]} written to {out_dir}',
        logger='current',
    )
    return summary
