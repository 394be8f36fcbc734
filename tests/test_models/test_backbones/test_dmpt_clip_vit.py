import warnings

import pytest
import torch
from open_clip.model import resize_pos_embed
from open_clip.transformer import QuickGELU

import mmdmpt.models.backbones.dmpt_clip_vit as dmpt_module
from mmdmpt.models.backbones import DMPTCLIPViT

IMG = (64, 32)  # 8x4 grid with patch 8; the weight files are 32x32 (4x4)


def _backbone(cfg, **kwargs):
    kwargs.setdefault('img_size', IMG)
    torch.manual_seed(kwargs.pop('seed', 0))
    return DMPTCLIPViT(clip_model=cfg, **kwargs)


def _loss(out):
    """A loss with non-zero gradients (a plain sum of LayerNorm outputs has none)."""
    weights = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)
    return (out * weights.cos()).sum() + out[..., :7].pow(2).sum()


def _plain(cfg, pretrained, **kwargs):
    return _backbone(
        cfg,
        pretrained=pretrained,
        num_modality_prompts=0,
        num_semantic_prompts=0,
        num_bind_prompts=0,
        bind_layers=(),
        **kwargs,
    )


def _reference_cls(clip, images):
    """open_clip's visual tower: the class token after ln_post (before proj)."""
    captured = {}
    handle = clip.visual.ln_post.register_forward_hook(lambda m, i, o: captured.__setitem__('x', o))
    with torch.no_grad():
        clip.visual(images)
    handle.remove()
    return captured['x'][:, 0]


def _reference_clip(clip_factory, cfg, path, quick_gelu):
    from mmdmpt.models.utils import load_clip_weights

    sd, _ = load_clip_weights(path)
    clip = clip_factory(cfg, IMG, quick_gelu=quick_gelu)
    resize_pos_embed(sd, clip)  # open_clip's own resizing
    clip.load_state_dict(sd, strict=False)
    return clip


def test_prompts_off_equals_open_clip(tiny_cfg, clip_factory, tiny_weights):
    cfg = tiny_cfg(layers=4)
    backbone = _plain(cfg, tiny_weights).eval()
    assert backbone.quick_gelu is False
    ref = _reference_clip(clip_factory, cfg, tiny_weights, quick_gelu=False)
    x = torch.randn(2, 3, 3, *IMG)
    with torch.no_grad():
        out = backbone(x)
    assert out.shape == (2, 3, 64)
    expected = _reference_cls(ref, x.flatten(0, 1)).view(2, 3, 64)
    assert torch.allclose(out, expected, atol=1e-5)
    # The visual weights are exactly open_clip's (positional embedding resized once).
    for key, value in ref.visual.state_dict().items():
        assert torch.allclose(backbone.visual.state_dict()[key], value, atol=1e-7), key


def test_openai_archive_selects_quick_gelu(tiny_cfg, clip_factory, openai_archive):
    cfg = tiny_cfg(layers=3, heads=1)
    backbone = _plain(cfg, openai_archive).eval()  # quick_gelu=None: automatic
    assert backbone.quick_gelu is True
    assert isinstance(backbone.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    x = torch.randn(2, 3, 3, *IMG)
    with torch.no_grad():
        out = backbone(x).flatten(0, 1)
    quick = _reference_clip(clip_factory, cfg, openai_archive, quick_gelu=True)
    gelu = _reference_clip(clip_factory, cfg, openai_archive, quick_gelu=False)
    assert torch.allclose(out, _reference_cls(quick, x.flatten(0, 1)), atol=1e-5)
    assert not torch.allclose(out, _reference_cls(gelu, x.flatten(0, 1)), atol=1e-3)
    # Same features as open_clip's own OpenAI loader (at the archive's 32x32).
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        official = open_clip.load_openai_model(openai_archive, device='cpu')
    square = _plain(cfg, openai_archive, img_size=(32, 32)).eval()
    x32 = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        ours = square(x32).flatten(0, 1)
    assert torch.allclose(ours, _reference_cls(official, x32.flatten(0, 1)), atol=1e-5)
    # The explicit argument overrides the automatic choice.
    forced = _plain(cfg, openai_archive, quick_gelu=False)
    assert forced.quick_gelu is False
    assert isinstance(forced.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)


def test_modality_knowledge_and_text_tower_dropped(tiny_cfg, tiny_weights):
    backbone = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights)
    assert backbone.modality_knowledge.shape == (3, 2, 64)  # (M, L_t, d_t)
    assert backbone.modality_text_features.shape == (3, 32)
    assert backbone.text_prompts[1] == 'a near-infrared photo of a person.'
    # Visual layers 0..3 read text layers 0, 0, 1, 1.
    assert backbone.text_layer_map == (0, 0, 1, 1)
    keys = backbone.state_dict().keys()
    assert not any(k.startswith(('transformer.', 'token_embedding', 'ln_final')) for k in keys)
    assert 'modality_knowledge' in keys
    # Deterministic: the same file gives the same knowledge.
    again = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights, seed=5)
    assert torch.equal(again.modality_knowledge, backbone.modality_knowledge)
    # CLIP's text mask is causal: with the default template the modality word
    # comes before the object, so the object name does not change the knowledge
    vehicle = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights, object_name='vehicle')
    assert torch.equal(vehicle.modality_knowledge, backbone.modality_knowledge)
    assert not torch.equal(vehicle.modality_text_features, backbone.modality_text_features)
    # ... unless the template puts the object first.
    late = _backbone(
        tiny_cfg(layers=4),
        pretrained=tiny_weights,
        object_name='vehicle',
        template='a {object} seen in {modality} light.',
    )
    assert not torch.equal(late.modality_knowledge, backbone.modality_knowledge)


def test_word_positions_cover_subtokens():
    from mmdmpt.models.utils.clip_builder import _find_word_positions, _get_tokenizer

    tok = _get_tokenizer()
    ids, pos = _find_word_positions(
        tok, 'a {modality} photo of a {object}.', 'near-infrared', 'person', 77
    )
    assert len(pos) == 3  # near, -, infrared
    assert [ids[p] for p in pos] == tok.encode('near-infrared')
    ids, pos = _find_word_positions(tok, 'the {object} in {modality} light', 'visible', 'car', 77)
    assert [ids[p] for p in pos] == tok.encode('visible') and pos == [4]


def test_gradients_reach_every_prompt_module(tiny_cfg, tiny_weights):
    backbone = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights).train()
    assert backbone.bind_layers == (1, 2)
    out = backbone(torch.randn(2, 3, 3, *IMG))
    _loss(out).backward()
    msp = backbone.modality_prompts
    for mapping in msp.mappings:
        assert mapping.weight.grad is not None and mapping.weight.grad.abs().sum() > 0
        assert mapping.bias.grad.abs().sum() > 0
    for layer in range(msp.num_layers):
        assert msp.offsets.grad[layer].abs().sum() > 0
    for name in ('semantic_prompts', 'bind_prompts'):
        grad = getattr(backbone, name).prompts.grad
        assert all(grad[i].abs().sum() > 0 for i in range(grad.shape[0])), name
    assert all(p.grad is None for p in backbone.visual.parameters())
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(('modality_prompts', 'semantic', 'bind')) for n in trainable
    )


def test_frozen_tower_stays_in_eval_and_unchanged(tiny_cfg, tiny_weights):
    backbone = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights)
    backbone.train()
    assert backbone.training and backbone.modality_prompts.training
    assert not any(m.training for m in backbone.visual.modules())
    before = {k: v.clone() for k, v in backbone.visual.state_dict().items()}
    optim = torch.optim.AdamW(backbone.parameters(), lr=0.1, weight_decay=0.1)
    _loss(backbone(torch.randn(2, 3, 3, *IMG))).backward()
    optim.step()
    for key, value in backbone.visual.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_full_finetuning_makes_tower_trainable(tiny_cfg, tiny_weights):
    backbone = _plain(tiny_cfg(layers=4), tiny_weights, frozen=False).train()
    assert backbone.visual.training
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    visual = {f'visual.{n}' for n, _ in backbone.visual.named_parameters()}
    assert trainable == visual - {'visual.proj'}  # proj does not take part in the feature
    _loss(backbone(torch.randn(2, 3, 3, *IMG))).backward()
    assert backbone.visual.conv1.weight.grad.abs().sum() > 0
    assert backbone.visual.transformer.resblocks[0].attn.in_proj_weight.grad is not None
    with_proj = _plain(tiny_cfg(layers=2), None, frozen=False, feature='cls_proj')
    assert with_proj.visual.proj.requires_grad


def _spy(monkeypatch, name):
    """Record the calls of a function the backbone module uses: ``(args, result)``."""
    calls = []
    original = getattr(dmpt_module, name)

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, out))
        return out

    monkeypatch.setattr(dmpt_module, name, spy)
    return calls


def test_no_grad_before_first_prompted_layer(tiny_cfg, tiny_weights, monkeypatch):
    backbone = _backbone(
        tiny_cfg(layers=4),
        pretrained=tiny_weights,
        modality_prompt_layers=(2, 3),
        semantic_prompt_layers=(2,),
        bind_layers=(),
    ).train()
    norms = {id(b.ln_1): i for i, b in enumerate(backbone.visual.transformer.resblocks)}
    calls = _spy(monkeypatch, 'layer_norm')
    _loss(backbone(torch.randn(1, 3, 3, *IMG))).backward()
    seen = {norms[id(a[1])]: out.requires_grad for a, out in calls if id(a[1]) in norms}
    assert seen == {0: False, 1: False, 2: True, 3: True}
    # Semantic prompts of layer 2 are carried through layer 3 (VPT-deep carry-over).
    assert backbone.semantic_prompts.prompts.grad.abs().sum() > 0


def test_missing_modalities_without_bind(tiny_cfg, tiny_weights, monkeypatch):
    backbone = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights, bind_layers=()).eval()
    x = torch.randn(3, 3, 3, *IMG)
    mask = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    with torch.no_grad():
        full = backbone(x)
        part = backbone(x, mask)
    assert torch.equal(part[~mask], torch.zeros_like(part[~mask]))  # exactly zero
    assert torch.allclose(part[mask], full[mask], atol=1e-5)
    # Only the present streams are embedded and run through the blocks.
    calls = _spy(monkeypatch, 'embed_tokens')
    with torch.no_grad():
        backbone(x, mask)
    assert [args[1].shape[0] for args, _ in calls] == [3]


def test_mixed_masks_equal_per_sample_runs_with_bind(tiny_cfg, tiny_weights):
    backbone = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights).eval()
    assert backbone.bind_layers
    x = torch.randn(5, 3, 3, *IMG)
    mask = torch.tensor(
        [
            [True, True, True],
            [True, False, True],
            [False, True, False],
            [True, True, False],
            [False, False, False],
        ]
    )
    with torch.no_grad():
        batch = backbone(x, mask)
        for i in range(len(x)):
            single = backbone(x[i : i + 1], mask[i : i + 1])
            assert torch.allclose(batch[i], single[0], atol=1e-5), i
        full = backbone(x)
    assert torch.equal(batch[4], torch.zeros_like(batch[4]))
    assert torch.allclose(batch[0], full[0], atol=1e-5)
    # With PromptIBind, a missing modality changes what the others see.
    assert not torch.allclose(batch[1, 0], full[1, 0], atol=1e-5)
    # All-true mask == no mask.
    with torch.no_grad():
        assert torch.allclose(backbone(x, torch.ones(5, 3, dtype=torch.bool)), full)


def test_bind_changes_other_modalities(tiny_cfg, tiny_weights):
    backbone = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights).eval()
    x = torch.randn(1, 3, 3, *IMG)
    y = x.clone()
    y[:, 2] = torch.randn_like(y[:, 2])  # change only the thermal image
    with torch.no_grad():
        a, b = backbone(x), backbone(y)
    assert not torch.allclose(a[0, 0], b[0, 0], atol=1e-6)  # rgb sees tir via bind
    no_bind = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights, bind_layers=()).eval()
    with torch.no_grad():
        a, b = no_bind(x), no_bind(y)
    assert torch.allclose(a[0, :2], b[0, :2], atol=1e-6)  # streams are independent


def test_bind_layer_validation(tiny_cfg, tiny_weights):
    cfg = tiny_cfg(layers=4)
    for bad in ((0,), (3,), (1, 5)):
        with pytest.raises(ValueError, match='bind_layers'):
            _backbone(cfg, bind_layers=bad)
    with pytest.raises(ValueError, match='semantic prompt'):
        _backbone(cfg, semantic_prompt_layers=(2, 3), bind_layers=(1, 2))
    with pytest.raises(ValueError, match='num_semantic_prompts'):
        _backbone(cfg, num_semantic_prompts=0, bind_layers=(1,))
    assert _backbone(cfg, num_semantic_prompts=0).bind_layers == ()  # 'auto'
    assert _backbone(tiny_cfg(layers=3)).bind_layers == (1,)
    assert _backbone(tiny_cfg(layers=2)).bind_layers == ()
    assert _backbone(cfg, semantic_prompt_layers=(2,)).bind_layers == ()
    assert _backbone(cfg, num_bind_prompts=0).bind_prompts is None


def test_other_validation(tiny_cfg):
    cfg = tiny_cfg(layers=2)
    with pytest.raises(ValueError, match=r"no word for the modalities \['lidar'\]"):
        _backbone(cfg, modalities=('rgb', 'lidar'))
    assert _backbone(cfg, modalities=('rgb', 'lidar'), modality_words=('visible', 'lidar'))
    assert _backbone(cfg, modalities=('rgb', 'lidar'), modality_words=dict(lidar='lidar'))
    depth = _backbone(cfg, modalities=('rgb', 'depth'))  # a known word by default
    assert depth.modality_words == ('visible', 'depth')
    with pytest.raises(ValueError, match='feature'):
        _backbone(cfg, feature='avg')
    with pytest.raises(ValueError, match='divisible'):
        _backbone(cfg, img_size=(60, 32))
    with pytest.raises(ValueError, match='Unknown open_clip model'):
        DMPTCLIPViT(clip_model='ViT-Z-99')
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        _backbone(cfg, pretrained='/nonexistent/missing.pt')
    backbone = _backbone(cfg)
    with pytest.raises(ValueError, match='img_size'):
        backbone(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match=r'\(N, 3, 3, H, W\)'):
        backbone(torch.randn(1, 2, 3, *IMG))


def test_weights_that_do_not_fit(tiny_cfg, tiny_weights):
    from mmdmpt.models.utils import CLIPWeightsError

    with pytest.raises(CLIPWeightsError, match='do not fit'):
        _backbone(tiny_cfg(layers=3), pretrained=tiny_weights)  # file has 4 layers


@pytest.mark.parametrize(('feature', 'channels'), [('cls_proj', 96), ('cls_prompt', 128)])
def test_feature_options(tiny_cfg, feature, channels):
    backbone = _backbone(tiny_cfg(layers=2), feature=feature).eval()
    assert backbone.out_channels == channels
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 3, *IMG), torch.tensor([[1, 0, 1], [1, 1, 1]]).bool())
    assert out.shape == (2, 3, channels)
    assert torch.equal(out[0, 1], torch.zeros(channels))


def test_with_cp_same_gradients(tiny_cfg, tiny_weights):
    x = torch.randn(2, 3, 3, *IMG)
    grads = []
    for with_cp in (False, True):
        backbone = _backbone(tiny_cfg(layers=4), pretrained=tiny_weights, with_cp=with_cp)
        backbone.train()
        _loss(backbone(x)).backward()
        grads.append(backbone.semantic_prompts.prompts.grad.clone())
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
