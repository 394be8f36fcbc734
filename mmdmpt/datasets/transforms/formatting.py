"""Pack one multi-modal sample into ``inputs`` and a ``DataSample``."""

from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmpretrain.structures import DataSample

from mmdmpt.registry import TRANSFORMS
from mmdmpt.utils.errors import DataError


@TRANSFORMS.register_module()
class PackMultiModalReIDInputs(BaseTransform):
    """Pack the images and labels of one sample.

    Output::

        dict(inputs=uint8 tensor (M, 3, H, W),        # contiguous, RGB
             data_samples=DataSample(gt_label=(1,), metainfo=...))

    The metainfo holds each of ``meta_keys`` present in ``results`` plus
    ``modality_mask`` (bool tensor ``(M,)``, all True when the loader set
    none) and ``img_shape`` (``(H, W)``). Images of absent modalities
    (``modality_mask`` False) are set to zero, whatever the augmentation
    painted on them.

    Required keys: ``imgs`` (list of ``HxWx3`` or ``HxW`` uint8 arrays of one
    shape), ``gt_label`` (optional), the ``meta_keys`` (optional).

    Args:
        meta_keys (Sequence[str]): Keys copied to the metainfo when present.
            Defaults to ``('sample_idx', 'img_paths', 'modalities', 'camid',
            'is_query', 'sceneid', 'night', 'ori_shapes')`` (``sceneid`` only
            exists for MSVR310, ``night`` for WMVeID863).
    """

    DEFAULT_META_KEYS = (
        'sample_idx',
        'img_paths',
        'modalities',
        'camid',
        'is_query',
        'sceneid',
        'night',
        'ori_shapes',
    )

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        """Pack ``results`` (see the class docstring).

        Args:
            results (dict): The pipeline results.

        Returns:
            dict: ``inputs`` and ``data_samples``.
        """
        imgs = results['imgs']
        if not imgs:
            raise ValueError('PackMultiModalReIDInputs: results["imgs"] is empty')
        shape = imgs[0].shape
        for img in imgs:
            if img.shape != shape:
                where = f' of {results["img_paths"]}' if 'img_paths' in results else ''
                raise DataError(
                    'PackMultiModalReIDInputs: modality images differ in shape '
                    f'({[im.shape for im in imgs]}){where}; resize them to one size first '
                    '(a Resize step in the pipeline)'
                )
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
            raise ValueError(
                f'PackMultiModalReIDInputs: images must be HxW or HxWx3, got shape {shape}'
            )
        h, w = shape[:2]
        mask = results.get('modality_mask')
        mask = np.ones(len(imgs), bool) if mask is None else np.asarray(mask, bool)
        if mask.shape != (len(imgs),):
            raise ValueError(
                f'PackMultiModalReIDInputs: modality_mask of shape {mask.shape} for '
                f'{len(imgs)} images'
            )
        # One copy per image, straight into the (M, 3, H, W) layout.
        out = np.empty((len(imgs), 3, h, w), dtype=np.uint8)
        for i, img in enumerate(imgs):
            if not mask[i]:
                out[i] = 0
            elif img.ndim == 2:
                out[i] = img[None]
            else:
                out[i] = img.transpose(2, 0, 1)
        data_sample = DataSample()
        if 'gt_label' in results:
            data_sample.set_gt_label(int(results['gt_label']))
        meta = {k: results[k] for k in self.meta_keys if k in results}
        meta['modality_mask'] = torch.from_numpy(mask.copy())
        meta['img_shape'] = (h, w)
        data_sample.set_metainfo(meta)
        return dict(inputs=torch.from_numpy(out), data_samples=data_sample)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(meta_keys={self.meta_keys})'
