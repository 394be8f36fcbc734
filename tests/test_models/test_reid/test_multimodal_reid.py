import pytest
import torch
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from mmpretrain.structures import DataSample

from mmdmpt.registry import MODELS

IMG = (64, 32)
NUM_CLASSES = 4


def _cfg(tiny_cfg, weights, **backbone):
    return dict(
        type='MultiModalReID',
        backbone=dict(
            type='DMPTCLIPViT', clip_model=tiny_cfg(layers=4), img_size=IMG, pretrained=weights
        )
        | backbone,
        head=dict(type='BNNeckHead', in_channels=3 * 64, num_classes=NUM_CLASSES),
    )


def _build(cfg, seed=0):
    torch.manual_seed(seed)
    return MODELS.build(cfg)


def _samples(labels, masks=None):
    out = []
    for i, label in enumerate(labels):
        sample = DataSample().set_gt_label(int(label))
        if masks is not None:
            sample.set_metainfo(dict(modality_mask=torch.tensor(masks[i])))
        out.append(sample)
    return out


@pytest.fixture(scope='module')
def model(mmdmpt_scope, tiny_cfg, tiny_weights):
    return _build(_cfg(tiny_cfg, tiny_weights))


def test_modes(model):
    model.eval()
    x = torch.randn(4, 3, 3, *IMG)
    masks = [[True, True, True], [True, False, True], [False, True, True], [True, True, False]]
    with torch.no_grad():
        feats = model(x)
        assert feats.shape == (4, 3 * 64)
        masked = model(x, _samples([0, 1, 2, 3], masks), mode='tensor')
        assert torch.equal(masked[1, 64:128], torch.zeros(64))
        assert torch.equal(masked[2, :64], torch.zeros(64))
        assert torch.allclose(masked[0], feats[0], atol=1e-5)
        samples = model(x, _samples([0, 1, 2, 3], masks), mode='predict')
    assert len(samples) == 4 and samples[1].pred_feature.shape == (3 * 64,)
    assert torch.allclose(samples[1].pred_feature, masked[1])
    assert torch.equal(model.predict(x)[0].pred_feature, feats[0])

    model.train()
    losses = model(x, _samples([0, 0, 1, 1], masks), mode='loss')
    assert {'loss_cls', 'loss_triplet', 'acc_top1'} <= set(losses)
    parsed, _ = model.parse_losses(losses)
    parsed.backward()
    with pytest.raises(ValueError, match='data_samples'):
        model(x, None, mode='loss')
    with pytest.raises(RuntimeError, match='Invalid mode'):
        model(x, mode='features')
    model.zero_grad()


def test_train_step_with_data_preprocessor_dict(mmdmpt_scope, tiny_cfg, tiny_weights):
    cfg = _cfg(tiny_cfg, tiny_weights)
    cfg['data_preprocessor'] = dict(type='BaseDataPreprocessor')
    model = _build(cfg)
    from mmengine.optim import OptimWrapper

    wrapper = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-3))
    data = dict(inputs=torch.randn(4, 3, 3, *IMG), data_samples=_samples([0, 0, 1, 1]))
    log_vars = model.train_step(data, wrapper)
    assert 'loss' in log_vars and 'acc_top1' in log_vars


def test_freezing(model):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    prefixes = (
        'backbone.modality_prompts.',
        'backbone.semantic_prompts.',
        'backbone.bind_prompts.',
        'head.',
    )
    assert all(n.startswith(prefixes) for n in trainable)
    assert any(n.startswith('backbone.modality_prompts.mappings') for n in trainable)
    assert 'head.bnneck.bias' not in trainable
    assert not any(p.requires_grad for p in model.backbone.visual.parameters())
    model.train()
    assert not model.backbone.visual.training and model.head.training


def test_optimizer_step_keeps_frozen_weights(mmdmpt_scope, tiny_cfg, tiny_weights):
    model = _build(_cfg(tiny_cfg, tiny_weights)).train()
    frozen = {k: v.clone() for k, v in model.backbone.visual.state_dict().items()}
    bias = model.head.bnneck.bias.clone()
    optim = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.1)
    prompts = model.backbone.semantic_prompts.prompts.clone()
    for _ in range(2):
        losses = model(torch.randn(4, 3, 3, *IMG), _samples([0, 0, 1, 1]), mode='loss')
        optim.zero_grad()
        model.parse_losses(losses)[0].backward()
        optim.step()
    for key, value in model.backbone.visual.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert torch.equal(model.head.bnneck.bias, bias)
    assert not torch.equal(model.backbone.semantic_prompts.prompts, prompts)


def test_full_finetuning_model(mmdmpt_scope, tiny_cfg, tiny_weights):
    cfg = _cfg(
        tiny_cfg,
        tiny_weights,
        frozen=False,
        num_modality_prompts=0,
        num_semantic_prompts=0,
        num_bind_prompts=0,
        bind_layers=(),
    )
    model = _build(cfg)
    visual = [p for n, p in model.backbone.visual.named_parameters() if n != 'proj']
    assert all(p.requires_grad for p in visual)
    model.train()
    assert model.backbone.visual.training


def test_trainable_checkpoint_round_trip(mmdmpt_scope, tiny_cfg, tiny_weights, tmp_path):
    cfg = _cfg(tiny_cfg, tiny_weights)
    model = _build(cfg, seed=0).train()
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = model(torch.randn(4, 3, 3, *IMG), _samples([0, 0, 1, 1]), mode='loss')
    model.parse_losses(losses)[0].backward()
    optim.step()  # prompts, mapping, BN statistics all differ from a fresh build

    state = model.trainable_state_dict()
    assert not any(k.startswith('backbone.visual.') for k in state)
    assert 'backbone.modality_knowledge' not in state
    assert {'head.bnneck.running_mean', 'head.bnneck.weight', 'head.classifier.weight'} <= set(
        state
    )
    assert 'head.bnneck.bias' not in state
    assert 'backbone.modality_prompts.mappings.0.weight' in state
    assert all(not v.requires_grad for v in state.values())
    path = tmp_path / 'trainable.pth'
    torch.save(state, path)
    full_size = sum(v.numel() for v in model.state_dict().values())
    assert sum(v.numel() for v in state.values()) < 0.5 * full_size

    fresh = _build(cfg, seed=123)
    loaded = torch.load(path, weights_only=True)
    result = fresh.load_state_dict(loaded, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(3, 3, 3, *IMG)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
        mask = [[True, False, True]] * 3
        assert torch.equal(model(x, _samples([0] * 3, mask)), fresh(x, _samples([0] * 3, mask)))

    # MMEngine's loader (used by load_checkpoint / resume) goes through the same hook.
    other = _build(cfg, seed=7).eval()
    mmengine_load_state_dict(other, dict(loaded), strict=True)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))

    # A missing *trainable* key still fails under strict loading.
    broken = dict(loaded)
    del broken['backbone.semantic_prompts.prompts']
    with pytest.raises(RuntimeError, match='semantic_prompts.prompts'):
        fresh.load_state_dict(broken, strict=True)


def test_head_in_channels_checked(mmdmpt_scope, tiny_cfg):
    cfg = _cfg(tiny_cfg, None)
    cfg['head']['in_channels'] = 100
    with pytest.raises(ValueError, match='in_channels'):
        MODELS.build(cfg)


def test_align_loss_gets_backbone_values(mmdmpt_scope, tiny_cfg, tiny_weights):
    cfg = _cfg(tiny_cfg, tiny_weights)
    cfg['head']['align_loss'] = dict(weight=1.0)
    model = _build(cfg)
    assert torch.equal(model.head.align_proj, model.backbone.visual.proj)
    assert torch.equal(model.head.align_text_features, model.backbone.modality_text_features)
    assert 'head.align_proj' not in model.state_dict()
    model.train()
    losses = model(torch.randn(4, 3, 3, *IMG), _samples([0, 0, 1, 1]), mode='loss')
    assert losses['loss_align'].requires_grad
