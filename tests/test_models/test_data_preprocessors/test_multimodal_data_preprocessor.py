import pytest
import torch
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

from mmdmpt.models.data_preprocessors import MultiModalDataPreprocessor
from mmdmpt.registry import MODELS


def _sample(value=255, mask=(True, True, True), modalities=('rgb', 'nir', 'tir'), hw=(4, 2)):
    m = len(modalities)
    x = torch.full((m, 3, *hw), value, dtype=torch.uint8)
    ds = DataSample().set_gt_label(1)
    ds.set_metainfo(dict(modalities=modalities, modality_mask=torch.tensor(mask)))
    return dict(inputs=x, data_samples=ds)


def test_build_and_default_normalisation():
    init_default_scope('mmdmpt')
    pre = MODELS.build(dict(type='MultiModalDataPreprocessor'))
    batch = default_collate([_sample(255), _sample(0)])
    assert batch['inputs'].shape == (2, 3, 3, 4, 2)
    out = pre(batch)
    x = out['inputs']
    assert x.dtype == torch.float32 and x.shape == (2, 3, 3, 4, 2)
    assert torch.allclose(x[0], torch.ones(1)) and torch.allclose(x[1], -torch.ones(1))
    assert len(out['data_samples']) == 2


def test_list_inputs_and_per_modality_stats():
    mean = {'tir': (10, 10, 10), 'rgb': (0, 0, 0), 'nir': (100, 100, 100)}
    std = [(1, 1, 1), (2, 2, 2), (5, 5, 5)]
    pre = MultiModalDataPreprocessor(mean=mean, std=std)
    samples = [_sample(110), _sample(110)]
    out = pre(
        dict(
            inputs=[s['inputs'] for s in samples], data_samples=[s['data_samples'] for s in samples]
        )
    )
    x = out['inputs']
    assert x[:, 0].unique().tolist() == [110.0]  # rgb: (110 - 0) / 1
    assert x[:, 1].unique().tolist() == [5.0]  # nir: (110 - 100) / 2
    assert x[:, 2].unique().tolist() == [20.0]  # tir: (110 - 10) / 5
    # per-channel values
    pre = MultiModalDataPreprocessor(mean=[0, 100, 200], std=1)
    x = pre(default_collate([_sample(200)]))['inputs']
    assert x[0, :, 0].unique().tolist() == [200.0] and x[0, :, 2].unique().tolist() == [0.0]
    # dict order follows the samples' modalities
    s = _sample(110, mask=(True, True), modalities=('tir', 'rgb'))
    x = MultiModalDataPreprocessor(mean=mean, std=1)(default_collate([s]))['inputs']
    assert x[0, 0].unique().tolist() == [100.0] and x[0, 1].unique().tolist() == [110.0]


def test_absent_modality_is_exactly_zero():
    pre = MultiModalDataPreprocessor()
    batch = default_collate([_sample(255, mask=(True, False, True)), _sample(3)])
    x = pre(batch)['inputs']
    assert (x[0, 1] == 0).all() and not torch.signbit(x[0, 1]).any()
    assert torch.allclose(x[0, 0], torch.ones(1)) and (x[1] != 0).all()


def test_errors():
    pre = MultiModalDataPreprocessor()
    with pytest.raises(ValueError, match=r'inputs must be \(N, M, 3, H, W\)'):
        pre(dict(inputs=torch.zeros(2, 3, 4, 2, dtype=torch.uint8), data_samples=None))
    with pytest.raises(ValueError, match='must share one shape'):
        pre(dict(inputs=[torch.zeros(3, 3, 4, 2), torch.zeros(3, 3, 4, 4)]))
    with pytest.raises(ValueError, match='1 data samples for a batch of 2'):
        batch = default_collate([_sample(), _sample()])
        pre(dict(inputs=batch['inputs'], data_samples=batch['data_samples'][:1]))
    with pytest.raises(ValueError, match=r"batch has 3 modalities but modalities=\('rgb', 'tir'\)"):
        MultiModalDataPreprocessor(modalities=('rgb', 'tir'))(default_collate([_sample()]))
    with pytest.raises(ValueError, match='mean holds 2 per-modality entries but the batch has 3'):
        MultiModalDataPreprocessor(mean=[(1, 1, 1), (2, 2, 2)])(default_collate([_sample()]))
    with pytest.raises(ValueError, match=r"data_preprocessor.mean \(its keys\).*'RGB'"):
        MultiModalDataPreprocessor(mean={'RGB': (1, 1, 1)})
    with pytest.raises(ValueError, match=r"mean has no entry for modalities \['tir'\]"):
        MultiModalDataPreprocessor(mean={'rgb': (1, 1, 1), 'nir': (1, 1, 1)})(
            default_collate([_sample()])
        )
    with pytest.raises(ValueError, match='std values must be positive'):
        MultiModalDataPreprocessor(std=0)
    with pytest.raises(ValueError, match='modality_mask has 2 entries but the model has 3'):
        pre(default_collate([_sample(mask=(True, False))]))
    with pytest.raises(ValueError, match='expects a dict with "inputs"'):
        pre(torch.zeros(1))
