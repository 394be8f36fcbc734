"""Decode the images of every modality of one sample.

Besides the transform, two helpers about it live here: leaving modalities
out of a dataloader config (:func:`set_missing_in_pipeline`, for
missing-modality testing) and reading one sample's images outside a
pipeline (:func:`load_sample_images`, for rank-list pictures).
"""

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmengine.logging import print_log

from mmdmpt.registry import TRANSFORMS
from mmdmpt.structures import MODALITIES, check_modalities
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError

#: The registered names of the loading transform, as configs write them.
LOADER_TYPES = ('LoadMultiModalImages', 'mmdmpt.LoadMultiModalImages')

_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_TAIL = 1024  # bytes searched for an end marker (trailing padding allowed)
#: Side of the zero images of an all-absent sample (the pipeline resizes them).
_EMPTY_SIDE = 16


def decode_bgr(buf: bytes, path: str, check_complete: bool = True) -> np.ndarray:
    """Decode an encoded image to an ``HxWx3`` uint8 array in BGR order.

    Grey images come back with three identical channels (OpenCV's
    ``IMREAD_COLOR``).

    Args:
        buf (bytes): The encoded file content.
        path (str): The file, for messages.
        check_complete (bool): Reject JPEG / PNG files whose end marker is
            missing (truncated files, which OpenCV decodes partially with
            only a warning). Defaults to True.

    Returns:
        numpy.ndarray: The image, contiguous.

    Raises:
        DataError: If the file is empty, truncated or cannot be decoded
            (including headers OpenCV refuses, e.g. an image larger than
            ``CV_IO_MAX_IMAGE_PIXELS``); the message names ``path``.
    """
    if not buf:
        raise DataError(f'cannot decode image {path}: the file is empty')
    if check_complete:
        tail = buf[-_TAIL:]
        if buf.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
            raise DataError(f'cannot decode image {path}: truncated JPEG (no end-of-image marker)')
        if buf.startswith(_PNG_MAGIC) and b'IEND' not in tail:
            raise DataError(f'cannot decode image {path}: truncated PNG (no IEND chunk)')
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header announcing a huge image
        text = ' '.join(str(exc).split())
        reason = text.split('error: ', 1)[-1] or 'OpenCV error'
        raise DataError(f'cannot decode image {path}: corrupt or not an image ({reason})') from None
    if img is None:
        raise DataError(f'cannot decode image {path}: corrupt or not an image')
    return img


@TRANSFORMS.register_module()
class LoadMultiModalImages(BaseTransform):
    """Load the image of every modality of one multi-modal sample.

    Reads ``img_paths`` (one per modality, in ``modalities`` order); for a
    strip (``tile_indices`` not None) the file is decoded once and cut into
    ``num_tiles`` tiles of equal width, each modality taking its tile.

    Required keys: ``img_paths``, ``modalities``, ``tile_indices`` (optional),
    ``num_tiles`` (strips).

    Added keys:

    - ``imgs`` (list[numpy.ndarray]): ``HxWx3`` uint8 RGB images in modality
      order (grey images get three identical channels);
    - ``ori_shapes`` / ``img_shapes`` (list[tuple[int, int]]): their shapes;
    - ``img_shape`` (tuple[int, int]): shape of the first image;
    - ``modality_mask`` (numpy.ndarray): bool ``(M,)``, False for the
      modalities named in ``missing_modalities``; those files are not read
      and their images are zeros of the shape of the present ones. A path
      that is None (or empty) is a modality the data lack for this sample
      (e.g. an empty cell of an annotation file): absent as well.

    Args:
        missing_modalities (Sequence[str]): Modalities to treat as absent (a
            name the sample does not carry is ignored). Defaults to ``()``.
        tile_width (int, optional): Expected tile width of strips; a strip
            must then be exactly ``num_tiles * tile_width`` wide. None infers
            the tile width as strip width / ``num_tiles`` (the width must
            divide). Defaults to None.
        check_complete (bool): Reject truncated JPEG/PNG files. Defaults to
            True.
        backend_args (dict, optional): ``mmengine.fileio`` backend arguments;
            None reads local files directly. Defaults to None.
    """

    def __init__(
        self,
        missing_modalities: Sequence[str] = (),
        tile_width: Optional[int] = None,
        check_complete: bool = True,
        backend_args: Optional[dict] = None,
    ) -> None:
        if isinstance(missing_modalities, str):
            missing_modalities = (missing_modalities,)
        if missing_modalities:
            check_modalities(missing_modalities, 'missing_modalities')
        if tile_width is not None and tile_width <= 0:
            raise ConfigError(f'tile_width must be positive, got {tile_width}')
        self.missing_modalities = tuple(missing_modalities)
        self._warned_empty = False
        self.tile_width = tile_width
        self.check_complete = check_complete
        self.backend_args = backend_args

    def _read(self, path: str) -> bytes:
        if self.backend_args is None:
            try:
                with open(path, 'rb') as f:
                    return f.read()
            except FileNotFoundError:
                raise DataNotFoundError(f'image file not found: {path}') from None
            except OSError as exc:  # a folder, no permission, ...
                reason = exc.strerror or type(exc).__name__
                raise DataError(f'cannot read image {path}: {reason}') from None
        try:
            return fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise DataNotFoundError(f'image file not found: {path}') from None

    def _tile(self, strip: np.ndarray, path: str, index: int, num_tiles: int) -> np.ndarray:
        width = strip.shape[1]
        if self.tile_width is not None:
            if width != num_tiles * self.tile_width:
                raise DataError(
                    f'strip {path} is {width} px wide; expected {num_tiles} tiles x '
                    f'{self.tile_width} px = {num_tiles * self.tile_width} px'
                )
            tile = self.tile_width
        else:
            if width % num_tiles:
                raise DataError(
                    f'strip {path} is {width} px wide; expected a width of {num_tiles} x '
                    f'the tile width (a multiple of {num_tiles})'
                )
            tile = width // num_tiles
        if not 0 <= index < num_tiles:
            raise ValueError(f'tile index {index} out of range for {num_tiles} tiles ({path})')
        return strip[:, index * tile : (index + 1) * tile]

    def transform(self, results: dict) -> dict:
        """Decode the images (see the class docstring).

        Args:
            results (dict): A ``data_info`` dict.

        Returns:
            dict: ``results`` with the added keys.

        Raises:
            DataNotFoundError: If an image file is missing (named).
            DataError: If an image file cannot be read otherwise, is empty,
                truncated or corrupt, or a strip does not have the expected
                width (all named).
            ConfigError: If ``missing_modalities`` leaves no modality of the
                sample.
            ValueError: If ``img_paths``, ``modalities`` and
                ``tile_indices`` disagree (an internal error of the dataset).
        """
        paths = results['img_paths']
        modalities = tuple(results.get('modalities', MODALITIES[: len(paths)]))
        if len(modalities) != len(paths):
            raise ValueError(
                f'{len(paths)} img_paths for {len(modalities)} modalities {modalities}: {paths}'
            )
        tiles = results.get('tile_indices')
        num_tiles = results.get('num_tiles')
        if tiles is not None and num_tiles is None:
            raise ValueError(f'tile_indices given without num_tiles for {paths}')
        if tiles is not None and len(tiles) != len(paths):
            raise ValueError(
                f'{len(tiles)} tile_indices {list(tiles)} for {len(paths)} img_paths: {paths}; '
                'expected one tile index per modality'
            )
        mask = np.array(
            [m not in self.missing_modalities and bool(p) for m, p in zip(modalities, paths)],
            dtype=bool,
        )
        if not any(paths):
            raise DataError(f'a sample without any image: img_paths={list(paths)}')
        if not mask.any():
            if all(m in self.missing_modalities for m in modalities):
                raise ConfigError(
                    f'every modality of the sample {modalities} is marked missing '
                    f'(missing_modalities={self.missing_modalities}); leave at least one out of '
                    'missing_modalities'
                )
            # The sample's data lack every modality the setting keeps (e.g. a
            # depth-only sample when depth is left out): an all-absent sample,
            # whose feature is zero. Its images are not read.
            if not self._warned_empty:
                self._warned_empty = True
                print_log(
                    f'LoadMultiModalImages(missing_modalities={self.missing_modalities}): some '
                    f'samples have none of the kept modalities (e.g. {list(paths)}); they are '
                    'evaluated as all-absent samples (zero feature).',
                    logger='current',
                    level=logging.WARNING,
                )
            shape = (_EMPTY_SIDE, _EMPTY_SIDE, 3)
            imgs = [np.zeros(shape, dtype=np.uint8) for _ in paths]
            shapes = [shape[:2]] * len(paths)
            results.update(
                imgs=imgs,
                ori_shapes=shapes,
                img_shapes=list(shapes),
                img_shape=shapes[0],
                modality_mask=mask,
            )
            return results

        decoded = {}  # path -> BGR image (a strip is decoded once)
        imgs = [None] * len(paths)
        for i, path in enumerate(paths):
            if not mask[i]:
                continue
            bgr = decoded.get(path)
            if bgr is None:
                bgr = decode_bgr(self._read(path), path, self.check_complete)
                decoded[path] = bgr
            if tiles is not None:
                bgr = self._tile(bgr, path, tiles[i], num_tiles)
            # One copy: cvtColor writes a fresh contiguous RGB array (tiles are views).
            imgs[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

        shape = next(img.shape for img in imgs if img is not None)
        for i in range(len(imgs)):
            if imgs[i] is None:
                imgs[i] = np.zeros(shape, dtype=np.uint8)
        shapes = [img.shape[:2] for img in imgs]
        results['imgs'] = imgs
        results['ori_shapes'] = shapes
        results['img_shapes'] = list(shapes)
        results['img_shape'] = shapes[0]
        results['modality_mask'] = mask
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(missing_modalities={self.missing_modalities}, '
            f'tile_width={self.tile_width}, check_complete={self.check_complete}, '
            f'backend_args={self.backend_args})'
        )


def set_missing_in_pipeline(dataloader_cfg: dict, missing: Sequence[str]) -> dict:
    """A copy of a dataloader config whose loading transform leaves ``missing`` out.

    Args:
        dataloader_cfg (dict): A dataloader config with
            ``dataset.pipeline``.
        missing (Sequence[str]): Modalities to treat as absent.

    Returns:
        dict: The changed copy.

    Raises:
        ConfigError: If the pipeline has no ``LoadMultiModalImages``.
    """
    cfg = copy.deepcopy(dataloader_cfg)
    pipeline = cfg.get('dataset', {}).get('pipeline', [])
    loaders = [t for t in pipeline if isinstance(t, dict) and t.get('type') in LOADER_TYPES]
    if not loaders:
        raise ConfigError(
            'missing-modality testing needs a LoadMultiModalImages transform in '
            'test_dataloader.dataset.pipeline; none was found.'
        )
    for transform in loaders:
        transform['missing_modalities'] = tuple(missing)
    return cfg


def load_sample_images(
    data_info: Dict[str, Any], present: Optional[Sequence[bool]] = None
) -> List[Optional[np.ndarray]]:
    """Read a sample's modality images as the dataset's loader does.

    Args:
        data_info (dict): A ``data_info`` dict (``img_paths``, ``modalities``
            and, for strips, ``tile_indices`` / ``num_tiles``).
        present (Sequence[bool], optional): Which modalities to read; the
            others come back as None. Defaults to None (all the data have).

    Returns:
        list[np.ndarray | None]: ``HxWx3`` RGB uint8 images in modality order.
    """
    paths = list(data_info['img_paths'])
    modalities = tuple(data_info.get('modalities') or MODALITIES[: len(paths)])
    if present is None:
        present = [bool(p) for p in paths]
    present = [bool(p) and bool(path) for p, path in zip(present, paths)]
    if not any(present):
        return [None] * len(modalities)
    absent = [m for m, p in zip(modalities, present) if not p]
    results = LoadMultiModalImages(missing_modalities=absent)(
        dict(
            img_paths=paths,
            modalities=modalities,
            tile_indices=data_info.get('tile_indices'),
            num_tiles=data_info.get('num_tiles'),
        )
    )
    return [img if p else None for img, p in zip(results['imgs'], present)]
