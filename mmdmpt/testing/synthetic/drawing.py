"""The shared part of the synthetic generator: identities, cameras and rendering.

Everything here is a pure function of integer seeds: the identities of a
tree (:func:`make_identities`, family by family), their train / test split
(:func:`split_ids`), the cameras (:func:`camera`) and one aligned
RGB / NIR / TIR sample (:func:`render`). The layout writers
(``rgbnt201.py`` ... ``wmveid863.py``) only decide which samples go where,
under which names.
"""

from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

from mmdmpt.structures.modalities import MODALITIES

#: Family types, cycled over the families: the one modality its members differ in.
FAMILY_TYPES = MODALITIES  # a family's members differ in one of these

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


def seeded_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from ``keys`` (each taken modulo ``2**32``).

    Args:
        *keys (int): The numbers the stream depends on, e.g. ``(seed,
            id_offset, tag, family)``.

    Returns:
        np.random.Generator: A fresh generator.
    """
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


def make_identities(
    num_ids: int, family_size: int, kind: str, seed: int, id_offset: int
) -> List[dict]:
    """Attributes of every identity, drawn family by family.

    Args:
        num_ids (int): Identities in total.
        family_size (int): Identities per family (the last may be smaller).
        kind (str): ``'person'`` or ``'vehicle'``.
        seed (int): The tree's seed.
        id_offset (int): The first raw id; it also seeds the drawing.

    Returns:
        list[dict]: One dict per identity, by raw id: ``pid``, ``family``,
        ``family_type`` (the modality its family varies in), ``shape``, the
        colour / NIR / heat codes and a few extra attributes.
    """
    num_families = -(-num_ids // family_size)
    start = int(seeded_rng(seed, id_offset, 101).integers(3))
    types = [FAMILY_TYPES[(start + i) % 3] for i in range(num_families)]
    identities = []
    for f in range(num_families):
        rng = seeded_rng(seed, id_offset, 202, f)
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


def identity_luts(identity: dict, kind: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label RGB (L, 3), NIR (L,) and TIR (L,) values of an identity.

    Args:
        identity (dict): One of :func:`make_identities`.
        kind (str): ``'person'`` or ``'vehicle'``.

    Returns:
        tuple: Three float32 look-up tables indexed by part label.
    """
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
def camera(seed: int, code: int, cam: int, kind: str) -> dict:
    """Pose, illumination and background of a camera (or a scene).

    Args:
        seed (int): The tree's seed.
        code (int): The layout's seed code (``LayoutWriter.code``).
        cam (int): The camera key (a camera, or a scene and view).
        kind (str): ``'person'`` or ``'vehicle'`` (only vehicles face either way).

    Returns:
        dict: The camera's settings, read by :func:`render`.
    """
    rng = seeded_rng(seed, code, 303, cam)
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


def noise_bank(seed: int, size: Tuple[int, int]) -> np.ndarray:
    """Standard normal noise shared by all images; each reads it at an offset.

    Args:
        seed (int): The tree's seed.
        size (tuple[int, int]): Image (tile) height and width.

    Returns:
        np.ndarray: 1-D float32 noise, a little longer than an RGB image.
    """
    return seeded_rng(seed, 909).standard_normal(
        size[0] * size[1] * 3 + _BANK_SLACK, dtype=np.float32
    )


_BANK_SLACK = 8191


def render(
    identity: dict,
    kind: str,
    size: Tuple[int, int],
    cam: dict,
    rng: np.random.Generator,
    bank: np.ndarray,
    night: bool = False,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one aligned sample: RGB ``HxWx3``, NIR ``HxW``, TIR ``HxW`` uint8.

    Args:
        identity (dict): One of :func:`make_identities`.
        kind (str): ``'person'`` or ``'vehicle'``.
        size (tuple[int, int]): Image height and width.
        cam (dict): From :func:`camera`.
        rng (np.random.Generator): The sample's own generator (jitter,
            clutter, noise offsets).
        bank (np.ndarray): From :func:`noise_bank`.
        night (bool): A night capture: RGB dimmed and noisier. Defaults to
            False.

    Returns:
        tuple: The RGB, NIR and TIR images.
    """
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
    lut_rgb, lut_nir, lut_tir = identity_luts(identity, kind)
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
# Splits and files
# --------------------------------------------------------------------------- #
def split_ids(
    identities: List[dict], train_ids: Union[int, float], seed: int, offset: int
) -> Tuple[List[dict], List[dict]]:
    """Whole families to train until the requested count is reached.

    Args:
        identities (list[dict]): From :func:`make_identities`.
        train_ids (int | float): A count, or a fraction in (0, 1).
        seed (int): The tree's seed.
        offset (int): The tree's ``id_offset``.

    Returns:
        tuple[list[dict], list[dict]]: The train and test identities, each
        sorted by raw id.

    Raises:
        ValueError: If the count leaves no id (or no whole family) to one
            of the splits, or a fraction is out of (0, 1).
    """
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
    order = [families[k] for k in seeded_rng(seed, offset, 404).permutation(len(families))]
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


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB (``HxWx3``) or grey (``HxW``) uint8 image.

    Args:
        img (np.ndarray): The image, RGB order.
        quality (int): JPEG quality, 1-100.

    Returns:
        bytes: The encoded file.
    """
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError('JPEG encoding failed')
    return buf.tobytes()
