import numpy as np
import pytest
import torch
from mmpretrain.structures import DataSample

from mmdmpt.datasets import PackMultiModalReIDInputs


def _results(**extra):
    imgs = [np.full((8, 4, 3), v, np.uint8) for v in (10, 20, 30)]
    imgs[0][0, 0] = (1, 2, 3)
    results = dict(
        imgs=imgs,
        gt_label=7,
        camid=1,
        is_query=True,
        sample_idx=5,
        img_paths=['a', 'b', 'c'],
        modalities=('rgb', 'nir', 'tir'),
        modality_mask=np.array([True, True, True]),
    )
    results.update(extra)
    return results


def test_pack_shapes_and_meta():
    out = PackMultiModalReIDInputs()(_results())
    x = out['inputs']
    assert x.shape == (3, 3, 8, 4) and x.dtype == torch.uint8 and x.is_contiguous()
    assert x[0, :, 0, 0].tolist() == [1, 2, 3]
    assert x[1].unique().tolist() == [20] and x[2].unique().tolist() == [30]
    ds = out['data_samples']
    assert isinstance(ds, DataSample)
    assert ds.gt_label.tolist() == [7]
    assert ds.camid == 1 and ds.is_query is True and ds.sample_idx == 5
    assert ds.img_paths == ['a', 'b', 'c'] and ds.modalities == ('rgb', 'nir', 'tir')
    assert ds.modality_mask.dtype == torch.bool and ds.modality_mask.tolist() == [True] * 3
    assert ds.img_shape == (8, 4)
    assert 'sceneid' not in ds


def test_pack_scene_and_absent_modality():
    results = _results(sceneid=12, modality_mask=np.array([True, False, True]))
    out = PackMultiModalReIDInputs()(results)
    assert out['data_samples'].sceneid == 12
    assert out['data_samples'].modality_mask.tolist() == [True, False, True]
    assert not out['inputs'][1].any()  # zero whatever the augmentation painted
    assert out['inputs'][2].unique().tolist() == [30]


def test_pack_grey_and_errors():
    results = _results(imgs=[np.full((8, 4), 9, np.uint8)], modality_mask=None, modalities=('nir',))
    out = PackMultiModalReIDInputs()(results)
    assert out['inputs'].shape == (1, 3, 8, 4) and out['inputs'].unique().tolist() == [9]
    assert out['data_samples'].modality_mask.tolist() == [True]
    bad = _results()
    bad['imgs'][1] = np.zeros((6, 4, 3), np.uint8)
    with pytest.raises(ValueError, match='modality images differ in shape'):
        PackMultiModalReIDInputs()(bad)
    with pytest.raises(ValueError, match=r'images must be HxW or HxWx3, got shape \(8, 4, 4\)'):
        PackMultiModalReIDInputs()(_results(imgs=[np.zeros((8, 4, 4), np.uint8)] * 3))
    with pytest.raises(ValueError, match='modality_mask of shape'):
        PackMultiModalReIDInputs()(_results(modality_mask=np.array([True])))
