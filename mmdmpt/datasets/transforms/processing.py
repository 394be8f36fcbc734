"""Single-image ReID augmentations whose randomness can be shared.

Each transform works on one ``HxWxC`` image under ``results['img']`` and
draws ALL its randomness in one ``@cache_randomness`` method, called exactly
once per call. Wrapped in mmcv's ``TransformBroadcaster`` with
``mapping={'img': 'imgs'}``, ``auto_remap=True`` and
``share_random_params=True``, every modality of a sample then gets the same
flip / crop offset / erased box; with ``share_random_params=False`` each
modality draws its own::

    dict(type='TransformBroadcaster',
         mapping={'img': 'imgs'}, auto_remap=True, share_random_params=True,
         transforms=[
             dict(type='Resize', scale=(128, 256), interpolation='bicubic'),
             dict(type='RandomFlip', prob=0.5, direction='horizontal'),
             dict(type='ReIDRandomCrop', padding=10),
             dict(type='ReIDRandomErasing', prob=0.5),
         ])

mmcv's ``Resize`` (no randomness), ``RandomFlip`` (randomness in the cached
``_choose_direction``), ``RandomResize``, ``RandomGrayscale`` and
``RandomApply`` (cached as well) are registered in mmdmpt's ``TRANSFORMS``
too, so configs with ``default_scope='mmdmpt'`` can name them.
"""

import math
from numbers import Number
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from mmcv.transforms import (
    BaseTransform,
    CenterCrop,
    KeyMapper,
    Pad,
    RandomApply,
    RandomChoice,
    RandomFlip,
    RandomGrayscale,
    RandomResize,
    Resize,
    TransformBroadcaster,
)
from mmcv.transforms.utils import cache_randomness

from mmdmpt.registry import TRANSFORMS
from mmdmpt.utils.errors import ConfigError

for _t in (
    CenterCrop,
    KeyMapper,
    Pad,
    RandomApply,
    RandomChoice,
    RandomFlip,
    RandomGrayscale,
    RandomResize,
    Resize,
    TransformBroadcaster,
):
    TRANSFORMS.register_module(module=_t)


@TRANSFORMS.register_module()
class ReIDRandomCrop(BaseTransform):
    """Zero-pad each side then crop at a random offset (ReID-style).

    The usual ReID "pad 10 + random crop back to the size" augmentation done
    with one allocation: the output is filled with ``pad_val`` and the part
    of the image inside the crop window is copied in.

    Required keys: ``img``. Modified keys: ``img``, ``img_shape``.

    Args:
        padding (int): Pixels added on every side. Defaults to 10.
        crop_size (tuple[int, int], optional): Output ``(h, w)``; None crops
            back to the input size. Defaults to None.
        pad_val (int | Sequence[int]): Value of the padded pixels. Defaults
            to 0.
    """

    def __init__(
        self,
        padding: int = 10,
        crop_size: Optional[Tuple[int, int]] = None,
        pad_val: Union[int, Sequence[int]] = 0,
    ) -> None:
        if padding < 0:
            raise ConfigError(f'padding must be >= 0, got {padding}')
        if crop_size is not None:
            crop_size = tuple(int(v) for v in crop_size)
            if len(crop_size) != 2 or min(crop_size) <= 0:
                raise ConfigError(f'crop_size must be a positive (h, w) pair, got {crop_size}')
        self.padding = int(padding)
        self.crop_size = crop_size
        self.pad_val = pad_val

    @cache_randomness
    def _crop_offset(self, h: int, w: int) -> Tuple[int, int]:
        """Top-left corner of the window in padded coordinates."""
        ch, cw = self.crop_size or (h, w)
        top = np.random.randint(0, max(h + 2 * self.padding - ch, 0) + 1)
        left = np.random.randint(0, max(w + 2 * self.padding - cw, 0) + 1)
        return int(top), int(left)

    def transform(self, results: dict) -> dict:
        """Crop ``results['img']``.

        Args:
            results (dict): With ``img`` (``HxW`` or ``HxWxC``).

        Returns:
            dict: ``results`` with the cropped ``img``.
        """
        img = results['img']
        h, w = img.shape[:2]
        ch, cw = self.crop_size or (h, w)
        top, left = self._crop_offset(h, w)
        out = np.empty((ch, cw) + img.shape[2:], dtype=img.dtype)
        out[...] = self.pad_val
        # Window [top, top+ch) x [left, left+cw) in padded coordinates; the
        # image lies at [p, p+h) x [p, p+w).
        p = self.padding
        y0, y1 = max(top, p), min(top + ch, p + h)
        x0, x1 = max(left, p), min(left + cw, p + w)
        if y1 > y0 and x1 > x0:
            out[y0 - top : y1 - top, x0 - left : x1 - left] = img[y0 - p : y1 - p, x0 - p : x1 - p]
        results['img'] = out
        results['img_shape'] = out.shape[:2]
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(padding={self.padding}, crop_size={self.crop_size}, '
            f'pad_val={self.pad_val})'
        )


@TRANSFORMS.register_module()
class ReIDRandomErasing(BaseTransform):
    """Random erasing as used in ReID (Zhong et al., AAAI 2020).

    With probability ``prob``, up to ``max_attempts`` boxes are drawn with an
    area ratio uniform in ``area_range`` and an aspect ratio (h / w) uniform
    in ``aspect_range``; the first one that fits strictly inside the image is
    filled. The fill is a constant (default 127, the 0.5 mean of the data
    preprocessor's 127.5 / 127.5 normalisation, so an erased box is ~0 after
    it) or, with ``fill='random'``, uniform noise in [0, 255] drawn from a
    seed that is part of the cached parameters (the same noise for every
    modality when parameters are shared). The image is modified in place.

    Required keys: ``img``. Modified keys: ``img``.

    Args:
        prob (float): Probability of erasing. Defaults to 0.5.
        area_range (tuple[float, float]): Erased area / image area. Defaults
            to ``(0.02, 0.4)``.
        aspect_range (tuple[float, float]): Height / width of the box.
            Defaults to ``(0.3, 3.3)``.
        fill (int | Sequence[int] | str): A value, one value per channel, or
            ``'random'``. Defaults to 127.
        max_attempts (int): Boxes tried before giving up. Defaults to 100.
    """

    def __init__(
        self,
        prob: float = 0.5,
        area_range: Tuple[float, float] = (0.02, 0.4),
        aspect_range: Tuple[float, float] = (0.3, 3.3),
        fill: Union[int, Sequence[int], str] = 127,
        max_attempts: int = 100,
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f'prob must be in [0, 1], got {prob}')
        lo, hi = area_range
        if not 0.0 < lo <= hi < 1.0:
            raise ConfigError(f'area_range must satisfy 0 < min <= max < 1, got {area_range}')
        rlo, rhi = aspect_range
        if not 0.0 < rlo <= rhi:
            raise ConfigError(f'aspect_range must satisfy 0 < min <= max, got {aspect_range}')
        if isinstance(fill, str):
            if fill != 'random':
                raise ConfigError(f"fill must be a number, a sequence or 'random', got {fill!r}")
        elif not isinstance(fill, Number) and len(fill) not in (1, 3):
            raise ConfigError(f'fill must hold 1 or 3 values, got {fill}')
        if max_attempts < 1:
            raise ConfigError(f'max_attempts must be >= 1, got {max_attempts}')
        self.prob = float(prob)
        self.area_range = (float(lo), float(hi))
        self.aspect_range = (float(rlo), float(rhi))
        self.fill = fill
        self.max_attempts = int(max_attempts)

    @cache_randomness
    def _box(self, h: int, w: int) -> Optional[Tuple[int, int, int, int, int]]:
        """``(top, left, box_h, box_w, noise_seed)`` or None (no erasing)."""
        if np.random.rand() >= self.prob:
            return None
        area = h * w
        for _ in range(self.max_attempts):
            target = np.random.uniform(*self.area_range) * area
            aspect = np.random.uniform(*self.aspect_range)
            bh = int(round(math.sqrt(target * aspect)))
            bw = int(round(math.sqrt(target / aspect)))
            if 0 < bh < h and 0 < bw < w:
                top = np.random.randint(0, h - bh + 1)
                left = np.random.randint(0, w - bw + 1)
                seed = np.random.randint(0, 2**31 - 1)
                return int(top), int(left), bh, bw, int(seed)
        return None

    def transform(self, results: dict) -> dict:
        """Erase a box of ``results['img']`` in place.

        Args:
            results (dict): With ``img``.

        Returns:
            dict: ``results``.
        """
        img = results['img']
        h, w = img.shape[:2]
        box = self._box(h, w)
        if box is None:
            return results
        top, left, bh, bw, seed = box
        if not img.flags.writeable:
            img = img.copy()
        region = img[top : top + bh, left : left + bw]
        if self.fill == 'random':
            rng = np.random.default_rng(seed)
            region[...] = rng.integers(0, 256, size=region.shape, dtype=np.uint8)
        else:
            region[...] = np.asarray(self.fill, dtype=img.dtype)
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(prob={self.prob}, area_range={self.area_range}, '
            f'aspect_range={self.aspect_range}, fill={self.fill!r}, '
            f'max_attempts={self.max_attempts})'
        )
