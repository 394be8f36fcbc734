"""Procedurally drawn multi-spectral identity sets in the official layouts.

:func:`make_synthetic` writes a small benchmark in exactly the folder layout,
file-name pattern and pairing rule of RGBNT201, RGBNT100 (768-wide strips),
MSVR310 (per-id folders, scene ids, ``query3`` samples also in the gallery)
or WMVeID863 (any of its three public layouts: per-id folders with
``v<cam>``/``n<night>`` names, the flat ``<id>_cam<c>`` layout, or per-id
folders with ``gallery/`` for ``test/``), so that the loaders, the
evaluation rules and whole trainings run without the real data.

Identities
    An identity is a silhouette (person: build, height, leg length, hat;
    vehicle: body type, length, height, wheels) painted per modality:

    - RGB: large colour blocks (person: upper / lower garment, skin, shoes,
      hat; vehicle: body, lower body band, window tint);
    - NIR: a reflectance code: which of 3 horizontal bands of the upper
      garment / body are bright or dark, plus the level (3 values) of the
      lower garment / windows;
    - TIR: a heat code: which 2 of 5 horizontal zones are hot, plus the
      warmth (3 values) of the rest of the clothing / body.

    All cues are horizontal bands or left-right symmetric, so a horizontal
    flip (a training augmentation) keeps every identity distinct, and they
    are coarse (16 px or more) so a patch-16 ViT can learn them.

Families
    Identities come in families of ``family_size`` sharing one silhouette.
    A family has a type, cycled over ``'rgb'``, ``'nir'``, ``'tir'``: its
    members differ ONLY in that modality's cue and are identical in the two
    others. Siblings differ clearly, over large areas: no shared garment
    colour; a different NIR level and at least 2 different bands; a
    different warmth and different hot zones.
    So fusion matters: dropping a modality makes that family's members
    indistinguishable. Families never straddle the train / test split.

Cameras
    Each camera (and MSVR310 scene, WMVeID863 night capture) has its own
    pose (shift, scale, facing), illumination (gain, colour cast, contrast),
    ambient temperature, background and noise level; every sample adds a
    small jitter, its own background clutter and noise. Night captures dim
    and noise the RGB image; NIR and TIR are little affected.

Learnability (measured while designing it, 2 CPU threads): a 4-layer,
width-96, patch-16 ViT on 128x64 inputs, batch 32 (8 ids x 4), pretrained
for 400 iterations on a disjoint 180-id tree (``id_offset=1001``) and
fine-tuned for 200 on the default 60-id tree reaches 81.5 % mAP on its 18
test ids (62 % when trained from scratch for 600 iterations). Dropping RGB,
NIR or TIR at test time gives 62.6, 69.4 and 41.9 % mAP, the families of
that type falling to chance.

Everything derives from integer seeds of (seed, id_offset, family / id /
camera / sample), so a tree is byte-identical across runs and does not
depend on the order of drawing; NIR and TIR are written as 1-channel grey
JPEGs (RGBNT100 strips hold them as 3 grey channels).

:func:`make_custom_synthetic` (``custom.py``) writes the custom layouts read
by :class:`~mmdmpt.datasets.MultiModalReIDFolder` (folders or an annotation
file) with any modality names, samples lacking modalities and, optionally,
no cameras.

Modules: ``drawing.py`` (identities, cameras, rendering, the split; shared),
``base.py`` (the tree being written, the writer interface), one writer per
layout (``rgbnt201.py``, ``rgbnt100.py``, ``msvr310.py``, ``wmveid863.py``)
registered in :data:`WRITERS`, and ``generator.py`` (:func:`make_synthetic`).
The writers keep their own copy of the folder names: they write the official
layouts independently of the readers in :mod:`mmdmpt.datasets`, and the tests
compare the two.
"""

from .custom import CUSTOM_LAYOUTS, make_custom_synthetic
from .drawing import identity_luts, make_identities, split_ids
from .generator import LAYOUTS, WMVEID863_LAYOUTS, WRITERS, make_synthetic

__all__ = [
    'CUSTOM_LAYOUTS',
    'make_custom_synthetic',
    'LAYOUTS',
    'WMVEID863_LAYOUTS',
    'WRITERS',
    'identity_luts',
    'make_identities',
    'make_synthetic',
    'split_ids',
]
