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
"""

import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.logging import print_log

from mmdmpt.utils.errors import ConfigError

from .wmveid863 import WMVEID863_LAYOUTS as _WMVEID863_LAYOUT_SPECS

LAYOUTS = ('rgbnt201', 'rgbnt100', 'msvr310', 'wmveid863')
#: Variants of the ``'wmveid863'`` layout (``wmveid863_layout=``), the first the default.
WMVEID863_LAYOUTS = tuple(_WMVEID863_LAYOUT_SPECS)
FAMILY_TYPES = ('rgb', 'nir', 'tir')

#: Default image size (height, width) of a person image / vehicle tile.
PERSON_SIZE = (256, 128)
VEHICLE_SIZE = (128, 256)

# Distinct garment / body colours (RGB).
PALETTE = np.array(
    [
        (200, 30, 30),  # red
        (30, 160, 40),  # green
        (30, 60, 200),  # blue
        (230, 210, 30),  # yellow
        (30, 200, 210),  # cyan
        (200, 40, 190),  # magenta
        (240, 130, 20),  # orange
        (110, 40, 160),  # purple
        (235, 235, 235),  # white
        (25, 25, 25),  # black
        (120, 70, 30),  # brown
        (250, 150, 190),  # pink
    ],
    dtype=np.float32,
)
SKIN = np.array([(225, 180, 150), (180, 130, 95), (120, 80, 55)], dtype=np.float32)

# Person part labels.
P_BG, P_HEAD, P_T1, P_T2, P_T3, P_ARM, P_THIGH, P_SHIN, P_SHOE, P_HAT = range(10)
# Vehicle part labels.
V_BG, V_ROOF, V_WIN, V_BODY1, V_BODY2, V_WHEEL, V_LIGHT = range(7)
NUM_LABELS = 10

# Heat codes: 2 hot zones out of 5 (person: shoulders, chest, belly, thighs,
# shins; vehicle: roof, windows, upper body, lower body, wheels).
HEAT_CODES = [(a, b, lvl) for a in range(5) for b in range(a + 1, 5) for lvl in range(3)]
WARMTH = (100.0, 145.0, 190.0)
# Reflectance codes: 3 bands bright (1) or dark (0), plus a level in 0..2.
NIR_CODES = [
    (b0, b1, b2, lvl) for b0 in (0, 1) for b1 in (0, 1) for b2 in (0, 1) for lvl in range(3)
]
COLOUR_PAIRS = [(a, b) for a in range(len(PALETTE)) for b in range(len(PALETTE)) if a != b]


# --------------------------------------------------------------------------- #
# Layout specifications
# --------------------------------------------------------------------------- #
_SPECS = {
    'rgbnt201': dict(kind='person', num_ids=60, samples_per_camera=5),
    'rgbnt100': dict(kind='vehicle', num_ids=60, samples_per_camera=5),
    'msvr310': dict(kind='vehicle', num_ids=60, samples_per_camera=3),
    'wmveid863': dict(kind='vehicle', num_ids=60, samples_per_camera=5),
}
_TOP_FOLDERS = {
    'rgbnt201': ('train_171', 'test'),
    'rgbnt100': ('rgbir',),
    'msvr310': ('bounding_box_train', 'query3', 'bounding_box_test'),
    # both gallery folder names: a tree must never hold both (the loader refuses it)
    'wmveid863': ('train', 'query', 'test', 'gallery'),
}
_LAYOUT_CODE = {name: i + 1 for i, name in enumerate(LAYOUTS)}


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


# --------------------------------------------------------------------------- #
# Identities
# --------------------------------------------------------------------------- #
def _pick(rng: np.random.Generator, candidates: list, size: int, far) -> list:
    """``size`` candidates in a random order, pairwise ``far`` when possible."""
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    chosen: list = []
    for c in order:
        if len(chosen) < size and all(far(c, d) for d in chosen):
            chosen.append(c)
    for c in order:  # not enough far-apart candidates: relax the constraint
        if len(chosen) < size and c not in chosen:
            chosen.append(c)
    return chosen


def _make_identities(
    num_ids: int, family_size: int, kind: str, seed: int, id_offset: int
) -> List[dict]:
    """Attributes of every identity, drawn family by family."""
    num_families = -(-num_ids // family_size)
    start = int(_rng(seed, id_offset, 101).integers(3))
    types = [FAMILY_TYPES[(start + i) % 3] for i in range(num_families)]
    identities = []
    for f in range(num_families):
        rng = _rng(seed, id_offset, 202, f)
        size = min(family_size, num_ids - f * family_size)
        if kind == 'person':
            shape = dict(
                build=float(rng.uniform(0.8, 1.2)),
                height=float(rng.uniform(0.9, 1.0)),
                legs=float(rng.uniform(0.44, 0.52)),
                hat=int(rng.integers(3)),  # 0 none, 1 cap, 2 tall hat
            )
        else:
            shape = dict(
                cabin=int(rng.integers(4)),  # sedan, suv, van, pickup
                length=float(rng.uniform(0.82, 0.98)),
                body=float(rng.uniform(0.85, 1.15)),
                wheel=float(rng.uniform(0.85, 1.15)),
            )
        ftype = types[f]
        colours = _pick(rng, COLOUR_PAIRS, size, lambda a, b: not set(a) & set(b))
        nirs = _pick(
            rng,
            NIR_CODES,
            size,
            lambda a, b: a[3] != b[3] and sum(x != y for x, y in zip(a[:3], b[:3])) >= 2,
        )
        heats = _pick(rng, HEAT_CODES, size, lambda a, b: a[2] != b[2] and a[:2] != b[:2])
        extra = dict(
            skin=int(rng.integers(len(SKIN))),
            shoe=int(rng.integers(2)),
            hat_colour=int(rng.integers(len(PALETTE))),
            tint=int(rng.integers(2)),
        )
        for m in range(size):
            identities.append(
                dict(
                    pid=id_offset + f * family_size + m,
                    family=f,
                    family_type=ftype,
                    shape=shape,
                    colours=colours[m if ftype == 'rgb' else 0],
                    nir=nirs[m if ftype == 'nir' else 0],
                    heat=heats[m if ftype == 'tir' else 0],
                    **extra,
                )
            )
    return identities


def _luts(identity: dict, kind: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label RGB (L, 3), NIR (L,) and TIR (L,) values of an identity."""
    rgb = np.zeros((NUM_LABELS, 3), np.float32)
    nir = np.zeros(NUM_LABELS, np.float32)
    tir = np.zeros(NUM_LABELS, np.float32)
    upper, lower = (PALETTE[i] for i in identity['colours'])
    b0, b1, b2, lvl = identity['nir']
    band = (60.0, 215.0)
    *hot, warmth = identity['heat']
    warm = WARMTH[warmth]
    if kind == 'person':
        rgb[[P_T1, P_T2, P_T3, P_ARM]] = upper
        rgb[[P_THIGH, P_SHIN]] = lower
        rgb[P_HEAD] = SKIN[identity['skin']]
        rgb[P_SHOE] = (30, 30, 30) if identity['shoe'] == 0 else (220, 220, 220)
        rgb[P_HAT] = PALETTE[identity['hat_colour']] * 0.8
        nir[P_HEAD] = 175
        nir[P_T1], nir[P_T2], nir[P_T3] = band[b0], band[b1], band[b2]
        nir[P_ARM] = (band[b0] + band[b2]) / 2
        nir[[P_THIGH, P_SHIN]] = (70.0, 140.0, 210.0)[lvl]
        nir[P_SHOE] = 45
        nir[P_HAT] = 110
        zones = (P_T1, P_T2, P_T3, P_THIGH, P_SHIN)
        tir[list(zones)] = warm
        for z in hot:
            tir[zones[z]] = 250
        tir[P_HEAD] = 215
        tir[P_ARM] = warm + 20
        tir[P_SHOE] = 70
        tir[P_HAT] = 55
    else:
        body, band_colour = upper, lower
        rgb[[V_ROOF, V_BODY1]] = body
        rgb[V_BODY2] = band_colour
        rgb[V_WIN] = (40, 50, 60) if identity['tint'] == 0 else (110, 130, 150)
        rgb[V_WHEEL] = (20, 20, 20)
        rgb[V_LIGHT] = (240, 240, 200)
        nir[V_ROOF], nir[V_BODY1], nir[V_BODY2] = band[b0], band[b1], band[b2]
        nir[V_WIN] = (50.0, 100.0, 150.0)[lvl]
        nir[V_WHEEL] = 35
        nir[V_LIGHT] = 230
        zones = (V_ROOF, V_WIN, V_BODY1, V_BODY2, V_WHEEL)
        tir[list(zones)] = warm
        for z in hot:
            tir[zones[z]] = 250
        tir[V_LIGHT] = 140
    return rgb, nir, tir


# --------------------------------------------------------------------------- #
# Geometry
# --------------------------------------------------------------------------- #
def _person_labels(h: int, w: int, shape: dict, pose: dict) -> np.ndarray:
    """Part label map of a person (bands are horizontal, left-right symmetric)."""
    lab = np.zeros((h, w), np.uint8)
    s = pose['scale']
    tall = 0.9 * h * s * shape['height']
    top = 0.05 * h + pose['dy'] * h
    cx = 0.5 * w + pose['dx'] * w
    bw = 0.36 * w * s * shape['build']

    def y(f):
        return int(round(top + f * tall))

    def rect(x0, y0, x1, y1, label):
        cv2.rectangle(lab, (int(round(x0)), y0), (int(round(x1)) - 1, y1 - 1), label, -1)

    leg_top = 1.0 - shape['legs'] - 0.04
    torso_top = 0.14
    t1, t2 = (torso_top + (leg_top - torso_top) * k for k in (1 / 3, 2 / 3))
    # arms behind the torso
    arm_w = 0.22 * bw
    rect(cx - bw / 2 - arm_w, y(torso_top + 0.01), cx - bw / 2, y(leg_top - 0.02), P_ARM)
    rect(cx + bw / 2, y(torso_top + 0.01), cx + bw / 2 + arm_w, y(leg_top - 0.02), P_ARM)
    rect(cx - bw / 2, y(torso_top), cx + bw / 2, y(t1), P_T1)
    rect(cx - bw / 2, y(t1), cx + bw / 2, y(t2), P_T2)
    rect(cx - bw / 2, y(t2), cx + bw / 2, y(leg_top), P_T3)
    leg_w, gap = 0.43 * bw, 0.07 * bw
    knee = leg_top + (0.96 - leg_top) * 0.5
    for x0 in (cx - gap / 2 - leg_w, cx + gap / 2):
        rect(x0, y(leg_top), x0 + leg_w, y(knee), P_THIGH)
        rect(x0, y(knee), x0 + leg_w, y(0.96), P_SHIN)
        rect(x0 - 0.05 * bw, y(0.96), x0 + leg_w + 0.05 * bw, y(1.0), P_SHOE)
    head_c = (int(round(cx)), y(0.075))
    axes = (max(1, int(round(0.30 * bw))), max(1, int(round(0.068 * tall))))
    cv2.ellipse(lab, head_c, axes, 0, 0, 360, P_HEAD, -1)
    if shape['hat']:
        # a cap or a tall hat on the head (outside the NIR / TIR code zones)
        hat_h = 0.045 if shape['hat'] == 1 else 0.075
        rect(cx - 0.34 * bw, y(0.005), cx + 0.34 * bw, y(0.005 + hat_h), P_HAT)
    return lab


_CABINS = (  # (start, end) of the cabin along the body, roof height factor
    (0.28, 0.72, 1.0),  # sedan
    (0.18, 0.88, 1.1),  # suv
    (0.05, 0.95, 1.3),  # van
    (0.08, 0.42, 1.15),  # pickup
)


def _vehicle_labels(h: int, w: int, shape: dict, pose: dict) -> np.ndarray:
    """Part label map of a vehicle seen from the side."""
    lab = np.zeros((h, w), np.uint8)
    s = pose['scale']
    length = 0.92 * w * s * shape['length']
    x0 = 0.5 * w + pose['dx'] * w - length / 2
    ground = 0.86 * h + pose['dy'] * h
    body_h = 0.30 * h * s * shape['body']
    wheel_r = 0.12 * h * s * shape['wheel']
    body_bot = ground - 0.6 * wheel_r
    body_top = body_bot - body_h
    c0, c1, roof_f = _CABINS[shape['cabin']]
    cab_h = 0.26 * h * s * roof_f

    def pt(x, y):
        return int(round(x)), int(round(y))

    mid = (body_top + body_bot) / 2
    cv2.rectangle(lab, pt(x0, body_top), pt(x0 + length - 1, mid - 1), V_BODY1, -1)
    cv2.rectangle(lab, pt(x0, mid), pt(x0 + length - 1, body_bot - 1), V_BODY2, -1)
    cx0, cx1 = x0 + c0 * length, x0 + c1 * length
    slope = 0.12 * length
    cabin = np.array(
        [
            pt(cx0, body_top),
            pt(cx0 + slope * 0.5, body_top - cab_h),
            pt(cx1 - slope * 0.5, body_top - cab_h),
            pt(cx1, body_top),
        ],
        np.int32,
    )
    cv2.fillPoly(lab, [cabin], V_WIN)
    roof = np.array(
        [
            pt(cx0 + slope * 0.5, body_top - cab_h),
            pt(cx1 - slope * 0.5, body_top - cab_h),
            pt(cx1 - slope * 0.5 + 0.03 * length, body_top - 0.72 * cab_h),
            pt(cx0 + slope * 0.5 - 0.03 * length, body_top - 0.72 * cab_h),
        ],
        np.int32,
    )
    cv2.fillPoly(lab, [roof], V_ROOF)
    for fx in (0.2, 0.8):
        cv2.circle(lab, pt(x0 + fx * length, ground - wheel_r), int(round(wheel_r)), V_WHEEL, -1)
    lw = max(2, int(round(0.04 * length)))
    cv2.rectangle(lab, pt(x0, body_top + 2), pt(x0 + lw, mid), V_LIGHT, -1)
    cv2.rectangle(lab, pt(x0 + length - lw, body_top + 2), pt(x0 + length - 1, mid), V_LIGHT, -1)
    if pose['flip']:
        lab = np.ascontiguousarray(lab[:, ::-1])
    return lab


# --------------------------------------------------------------------------- #
# Cameras and rendering
# --------------------------------------------------------------------------- #
def _camera(seed: int, layout: str, cam: int, kind: str) -> dict:
    """Pose, illumination and background of a camera (or a scene)."""
    rng = _rng(seed, _LAYOUT_CODE[layout], 303, cam)
    return dict(
        dx=float(rng.uniform(-0.06, 0.06)),
        dy=float(rng.uniform(-0.015, 0.015)),
        scale=float(rng.uniform(0.9, 1.05)),
        flip=bool(rng.integers(2)) if kind == 'vehicle' else False,
        gain=float(rng.uniform(0.75, 1.2)),
        cast=rng.uniform(0.9, 1.1, size=3).astype(np.float32),
        contrast=float(rng.uniform(0.85, 1.1)),
        nir_gain=float(rng.uniform(0.8, 1.15)),
        ambient=float(rng.uniform(25, 65)),
        bg_rgb=rng.uniform(60, 190, size=3).astype(np.float32),
        bg_grad=float(rng.uniform(-50, 50)),
        bg_nir=float(rng.uniform(80, 150)),
        noise=float(rng.uniform(3.0, 8.0)),
    )


def _noise_bank(seed: int, size: Tuple[int, int]) -> np.ndarray:
    """Standard normal noise shared by all images; each reads it at an offset."""
    return _rng(seed, 909).standard_normal(size[0] * size[1] * 3 + _BANK_SLACK, dtype=np.float32)


_BANK_SLACK = 8191


def _render(
    identity: dict,
    kind: str,
    size: Tuple[int, int],
    cam: dict,
    rng: np.random.Generator,
    bank: np.ndarray,
    night: bool = False,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one aligned sample: RGB ``HxWx3``, NIR ``HxW``, TIR ``HxW`` uint8."""
    h, w = size
    pose = dict(
        dx=cam['dx'] + rng.uniform(-0.025, 0.025),
        dy=cam['dy'] + rng.uniform(-0.008, 0.008),
        scale=cam['scale'] * rng.uniform(0.97, 1.03),
        flip=cam['flip'],
    )
    if kind == 'person':
        lab = _person_labels(h, w, identity['shape'], pose)
    else:
        lab = _vehicle_labels(h, w, identity['shape'], pose)
    lut_rgb, lut_nir, lut_tir = _luts(identity, kind)
    fg = (lab > 0).view(np.uint8)

    # Backgrounds: camera base + vertical gradient + per-sample clutter blocks.
    grad = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None] * cam['bg_grad']
    rgb = np.empty((h, w, 3), np.float32)
    rgb[...] = cam['bg_rgb']
    rgb += grad[..., None]
    nir = np.full((h, w), cam['bg_nir'], np.float32)
    nir += grad
    tir = np.full((h, w), cam['ambient'], np.float32)
    for _ in range(int(rng.integers(2, 6))):
        bh, bw = int(rng.integers(h // 10, h // 3)), int(rng.integers(w // 10, w // 2))
        y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        rgb[y0 : y0 + bh, x0 : x0 + bw] = cam['bg_rgb'] + rng.uniform(-50, 50, size=3)
        nir[y0 : y0 + bh, x0 : x0 + bw] = cam['bg_nir'] + rng.uniform(-45, 45)
        tir[y0 : y0 + bh, x0 : x0 + bw] = cam['ambient'] + rng.uniform(-10, 20)
    # The object over the background.
    cv2.copyTo(lut_rgb[lab], fg, rgb)
    cv2.copyTo(lut_nir[lab], fg, nir)
    cv2.copyTo(lut_tir[lab], fg, tir)

    # Illumination / sensor response: (x - 128) * contrast + 128, times gain
    # and colour cast; night dims RGB.
    gain = cam['gain'] * rng.uniform(0.92, 1.08)
    contrast = cam['contrast']
    scale = (gain * contrast) * cam['cast']
    shift = (gain * 128.0 * (1.0 - contrast)) * cam['cast']
    noise = cam['noise']
    if night:
        dim = rng.uniform(0.25, 0.4)
        scale, shift, noise = scale * dim, shift * dim + 8.0, noise * 1.8
    rgb *= scale.astype(np.float32)
    rgb += shift.astype(np.float32)
    nir *= np.float32(cam['nir_gain'] * rng.uniform(0.93, 1.07))
    tir = cv2.GaussianBlur(tir, (0, 0), 1.5)
    nir = cv2.GaussianBlur(nir, (0, 0), 0.8)

    def finish(img, sigma):
        offset = int(rng.integers(0, _BANK_SLACK))
        img += bank[offset : offset + img.size].reshape(img.shape) * np.float32(sigma)
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)

    return finish(rgb, noise), finish(nir, noise * 0.8), finish(tir, 3.0)


# --------------------------------------------------------------------------- #
# Plans per layout
# --------------------------------------------------------------------------- #
def _split_ids(identities: List[dict], train_ids: Union[int, float], seed: int, offset: int):
    """Whole families to train until the requested count is reached."""
    num = len(identities)
    if isinstance(train_ids, float) and not isinstance(train_ids, bool):
        if not 0.0 < train_ids < 1.0:
            raise ValueError(f'train_ids as a fraction must be in (0, 1), got {train_ids}')
        target = int(round(train_ids * num))
    else:
        target = int(train_ids)
    if not 0 < target < num:
        raise ValueError(
            f'train_ids={train_ids} gives {target} training ids of {num}; both the train and '
            'the test split need at least one id'
        )
    families = sorted({i['family'] for i in identities})
    order = [families[k] for k in _rng(seed, offset, 404).permutation(len(families))]
    members: Dict[int, List[dict]] = {}
    for ident in identities:
        members.setdefault(ident['family'], []).append(ident)
    train, test = [], []
    for f in order:
        (train if len(train) < target else test).extend(members[f])
    if not test:
        raise ValueError(
            f'train_ids={train_ids}: no family left for the test split; use fewer training ids '
            'or more ids'
        )
    return sorted(train, key=lambda i: i['pid']), sorted(test, key=lambda i: i['pid'])


def _encode(img: np.ndarray, quality: int) -> bytes:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError('JPEG encoding failed')
    return buf.tobytes()


def _write(path: str, data: bytes) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


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

    Splits and cameras per layout (raw ids start at ``id_offset``; test ids
    are disjoint from train ids):

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
        ConfigError: If ``wmveid863_layout`` is unknown, or not the default
            for another layout than ``'wmveid863'``.
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
    spec = _SPECS[layout]
    kind = spec['kind']
    num_ids = spec['num_ids'] if num_ids is None else int(num_ids)
    spc = spec['samples_per_camera'] if samples_per_camera is None else int(samples_per_camera)
    default_size = PERSON_SIZE if kind == 'person' else VEHICLE_SIZE
    size = (int(height or default_size[0]), int(width or default_size[1]))
    if num_ids < 2:
        raise ValueError(f'num_ids must be >= 2 (train and test ids), got {num_ids}')
    if spc < 1:
        raise ValueError(f'samples_per_camera must be >= 1, got {spc}')
    if spc < 2 and layout in ('rgbnt100', 'wmveid863'):
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

    tops = [osp.join(out_dir, t) for t in _TOP_FOLDERS[layout]]
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

    identities = _make_identities(num_ids, family_size, kind, seed, id_offset)
    train, test = _split_ids(identities, train_ids, seed, id_offset)
    train_pids = {i['pid'] for i in train}
    code = _LAYOUT_CODE[layout]
    counts: Dict[str, int] = {}

    def emit(split_dir: str, paths: Sequence[str], images: Sequence[bytes]) -> None:
        """Write the files of one sample and count it under its split folder."""
        for path, data in zip(paths, images):
            _write(path, data)
        counts[split_dir] = counts.get(split_dir, 0) + 1

    bank = _noise_bank(seed, size)

    def sample(ident, cam_key, cam_cfg, k, night=False):
        rng = _rng(seed, code, 505, ident['pid'], cam_key, k)
        return _render(ident, kind, size, cam_cfg, rng, bank, night=night)

    def sep(rgb, nir, tir):
        return [_encode(rgb, quality), _encode(nir, quality), _encode(tir, quality)]

    if layout == 'rgbnt201':
        folders = ('RGB', 'NI', 'TI')
        for split_dir, idents, cams in (('train_171', train, (1, 2, 3, 4)), ('test', test, (1, 2))):
            for ident in idents:
                for c in cams:
                    cam_cfg = _camera(seed, layout, c, kind)
                    for k in range(spc):
                        name = f'{ident["pid"]:06d}_cam{c}_0_{k:02d}.jpg'
                        data = sep(*sample(ident, c, cam_cfg, k))
                        emit(
                            split_dir,
                            [osp.join(out_dir, split_dir, f, name) for f in folders],
                            data,
                        )
    elif layout == 'rgbnt100':
        for ident in train + test:
            is_train = ident['pid'] in train_pids
            cams = sorted(_rng(seed, code, 606, ident['pid']).choice(8, 4, replace=False) + 1)
            for c in cams:
                cam_cfg = _camera(seed, layout, int(c), kind)
                for k in range(spc):
                    rgb, nir, tir = sample(ident, int(c), cam_cfg, k)
                    strip = np.concatenate(
                        [
                            rgb,
                            cv2.cvtColor(nir, cv2.COLOR_GRAY2RGB),
                            cv2.cvtColor(tir, cv2.COLOR_GRAY2RGB),
                        ],
                        axis=1,
                    )
                    split_dir = (
                        'bounding_box_train'
                        if is_train
                        else ('query' if k == 0 else 'bounding_box_test')
                    )
                    name = f'{ident["pid"]:04d}_c{int(c):04d}_{k:03d}.jpg'
                    emit(
                        f'rgbir/{split_dir}',
                        [osp.join(out_dir, 'rgbir', split_dir, name)],
                        [_encode(strip, quality)],
                    )
    elif layout == 'msvr310':
        folders = ('vis', 'ni', 'th')
        scene = 0
        for ident in train + test:
            is_train = ident['pid'] in train_pids
            vid = ident['pid']
            idx = 0
            for s in range(3):
                scene += 1
                views = sorted(_rng(seed, code, 707, vid, s).choice(8, 2, replace=False))
                for v in views:
                    # a scene is its own capture: camera from (scene, view)
                    cam_cfg = _camera(seed, layout, 1000 * scene + int(v), kind)
                    for k in range(spc):
                        name = f'{vid:04d}_s{scene:03d}_v{int(v)}_{idx:03d}.jpg'
                        idx += 1
                        data = sep(*sample(ident, 1000 * scene + int(v), cam_cfg, k))
                        dirs = ['bounding_box_train'] if is_train else ['bounding_box_test']
                        if not is_train and v == views[0] and k == 0:
                            dirs.append('query3')
                        for d in dirs:
                            emit(
                                d,
                                [osp.join(out_dir, d, f'{vid:04d}', f, name) for f in folders],
                                data,
                            )
    else:  # wmveid863, in one of its public variants (same samples, same bytes)
        folders = ('vis', 'ni', 'th')
        structure, gallery_dir = _WMVEID863_LAYOUT_SPECS[wmveid863_layout]
        for ident in train + test:
            is_train = ident['pid'] in train_pids
            vid = ident['pid']
            cam_rng = _rng(seed, code, 808, vid)
            cams = sorted(cam_rng.choice(6, 3, replace=False))
            idx = 0
            for c in cams:
                night = int(cam_rng.random() < 0.3)
                cam_cfg = _camera(seed, layout, int(c), kind)
                for k in range(spc):
                    if structure == 'flat':  # id and 1-based camera in the name
                        name = f'{vid:04d}_cam{int(c) + 1}_n{night}_{idx:03d}.jpg'
                    else:
                        name = f'{vid:04d}_v{int(c)}_n{night}_{idx:03d}.jpg'
                    idx += 1
                    data = sep(*sample(ident, int(c), cam_cfg, k, night=bool(night)))
                    split_dir = 'train' if is_train else ('query' if k == 0 else gallery_dir)
                    sub = (split_dir,) if structure == 'flat' else (split_dir, f'{vid:04d}')
                    emit(split_dir, [osp.join(out_dir, *sub, f, name) for f in folders], data)

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
        num_samples=dict(sorted(counts.items())),
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
