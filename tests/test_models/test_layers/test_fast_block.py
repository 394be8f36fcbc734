"""The fused block path (SDPA, fused MLP, partial queries / constants) vs open_clip.

Also: every block of the towers DMPT builds on the pinned open_clip takes the
fused path (these tests fail if it does not), blocks that do not fit fall back
to open_clip's own forward with one warning per reason, and the embedding step
equals open_clip's ``VisionTransformer._embeds``.
"""

import collections
import copy
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

import mmdmpt.models.layers.fast_block as fast_block
from mmdmpt.models.backbones import DMPTCLIPViT
from mmdmpt.models.layers import (
    embed_tokens,
    fallback_counts,
    fast_block_forward,
    fast_path_supported,
    visual_embeds,
    visual_embeds_from_attributes,
)


def _pair(act, trainable, seed=0):
    torch.manual_seed(seed)
    block = ResidualAttentionBlock(64, 4, act_layer=act).eval().requires_grad_(trainable)
    return block, copy.deepcopy(block)


def _grads(block, fn, x, weights):
    x = x.detach().clone().requires_grad_()
    (fn(block, x) * weights).sum().backward()
    params = [p.grad for p in block.parameters() if p.requires_grad]
    return x.grad, params


def _tiny_vit(act=nn.GELU, seed=0, **kwargs):
    """A tiny open_clip VisionTransformer (4x4 grid of 8x8 patches, width 64)."""
    torch.manual_seed(seed)
    kwargs.setdefault('layers', 2)
    return VisionTransformer(
        image_size=32, patch_size=8, width=64, heads=4, mlp_ratio=4.0, act_layer=act, **kwargs
    ).eval()


@pytest.fixture
def fallbacks(monkeypatch):
    """Fresh fallback state; yields the WARNING records logged meanwhile."""
    monkeypatch.setattr(fast_block, '_WARNED', set())
    monkeypatch.setattr(fast_block, '_FALLBACKS', collections.Counter())
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# ------------------------------------------------- fused path vs open_clip
@pytest.mark.parametrize('act', [QuickGELU, torch.nn.GELU])
@pytest.mark.parametrize('trainable', [False, True])
@pytest.mark.parametrize('chunk_bytes', [None, 5000])  # 5000 B: chunks of a few rows
def test_fused_block_matches_open_clip(monkeypatch, act, trainable, chunk_bytes):
    if chunk_bytes is not None:
        monkeypatch.setattr(fast_block, '_CPU_CHUNK_BYTES', chunk_bytes)
    ref, ours = _pair(act, trainable)
    x = torch.randn(3, 13, 64)
    weights = torch.randn(3, 13, 64)
    with torch.no_grad():
        assert torch.allclose(fast_block_forward(ours, x), ref(x), atol=1e-5)
    gx_ref, gp_ref = _grads(ref, lambda b, t: b(t), x, weights)
    gx, gp = _grads(ours, fast_block_forward, x, weights)
    assert torch.allclose(gx, gx_ref, atol=1e-4)
    assert len(gp) == len(gp_ref) == (12 if trainable else 0)
    for a, b in zip(gp, gp_ref):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_partial_queries_and_constant_prefix():
    block, _ = _pair(QuickGELU, False)
    x = torch.randn(2, 11, 64)
    with torch.no_grad():
        full = block(x)
        assert torch.allclose(fast_block_forward(block, x, num_queries=3), full[:, :3], atol=1e-5)
    weights = torch.randn(2, 11, 64)
    const, prompts = x[:, :8], x[:, 8:].clone().requires_grad_()
    outs, grads = [], []
    for num_const in (0, 8):
        prompts.grad = None
        out = fast_block_forward(block, torch.cat([const, prompts], 1), num_const=num_const)
        (out * weights).sum().backward()
        outs.append(out.detach())
        grads.append(prompts.grad.clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_fast_block_matches_open_clip_block(tiny_cfg, clip_factory):
    clip = clip_factory(tiny_cfg(layers=1), 32)
    block = clip.visual.transformer.resblocks[0]
    x = torch.randn(5, 11, 64)
    with torch.no_grad():
        assert torch.allclose(fast_block_forward(block, x), block(x), atol=1e-5)


def test_prompts_off_matches_open_clip_under_bf16_autocast(tiny_cfg, clip_factory):
    cfg = tiny_cfg(layers=2)
    torch.manual_seed(0)
    backbone = DMPTCLIPViT(
        clip_model=cfg,
        img_size=(64, 32),
        num_modality_prompts=0,
        num_semantic_prompts=0,
        num_bind_prompts=0,
        bind_layers=(),
        quick_gelu=True,
    ).eval()
    clip = clip_factory(cfg, (64, 32), quick_gelu=True)
    clip.visual.load_state_dict(backbone.visual.state_dict())
    x = torch.randn(2, 3, 3, 64, 32)
    captured = {}
    clip.visual.ln_post.register_forward_hook(lambda m, i, o: captured.__setitem__('x', o))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        ours = backbone(x).float()
        clip.visual(x.flatten(0, 1))
    ref = captured['x'][:, 0].float().view(2, 3, -1)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=0.1, rtol=0.05)
    assert (ours - ref).abs().mean() < 0.02


# ------------------------------------- the pinned open_clip takes the fast path
@pytest.mark.parametrize('quick_gelu', [True, False])
def test_tiny_backbone_takes_fast_path(tiny_cfg, clip_factory, fallbacks, quick_gelu):
    cfg = tiny_cfg(layers=3)
    blocks = clip_factory(cfg, 32, quick_gelu=quick_gelu).visual.transformer.resblocks
    for block in blocks:
        assert fast_path_supported(block) == (True, '')
    torch.manual_seed(0)
    backbone = DMPTCLIPViT(clip_model=cfg, img_size=(32, 32), quick_gelu=quick_gelu).train()
    fallbacks.clear()  # (the build warns that the weights are random)
    for block in backbone.visual.transformer.resblocks:
        assert fast_path_supported(block) == (True, '')
    out = backbone(torch.randn(2, 3, 3, 32, 32), torch.tensor([[1, 1, 1], [1, 0, 1]]).bool())
    out.pow(2).sum().backward()
    assert backbone.semantic_prompts.prompts.grad.abs().sum() > 0
    assert fallback_counts() == {}
    assert fallbacks == []


def _vit_b16_visual(quick_gelu):
    """DMPT's default tower (ViT-B/16 at 256x128) with random weights, built cheaply."""
    from mmdmpt.models.utils import build_clip, resolve_clip_config

    cfg, _, _ = resolve_clip_config('ViT-B-16', (256, 128))
    with torch.device('meta'):
        visual = build_clip(cfg, quick_gelu).visual
    visual = visual.to_empty(device='cpu')
    torch.manual_seed(0)
    with torch.no_grad():
        for param in visual.parameters():
            param.normal_(0.0, 0.02)
    return visual


@pytest.mark.parametrize('quick_gelu', [True, False])
def test_vit_b16_layout_takes_fast_path(fallbacks, quick_gelu):
    visual = _vit_b16_visual(quick_gelu)
    blocks = visual.transformer.resblocks
    assert len(blocks) == 12
    for block in blocks:
        assert fast_path_supported(block) == (True, '')
    with torch.no_grad():
        x = visual_embeds(visual, torch.randn(1, 3, 256, 128))[:, :9]
        assert torch.allclose(fast_block_forward(blocks[0], x), blocks[0](x), atol=1e-5)
        for block in blocks:
            x = fast_block_forward(block, x, num_queries=None)
    assert fallback_counts() == {}
    assert fallbacks == []


@pytest.mark.parametrize('act', [QuickGELU, nn.GELU])
def test_plain_custom_block_takes_fast_path(fallbacks, act):
    """open_clip's CustomResidualAttentionBlock (its own Attention) without extras."""
    visual = _tiny_vit(act, block_type='custom')
    block = visual.transformer.resblocks[0]
    assert type(block).__name__ == 'CustomResidualAttentionBlock'
    assert fast_path_supported(block) == (True, '')
    block.requires_grad_(True)
    ours = copy.deepcopy(block)
    x = torch.randn(3, 13, 64)
    weights = torch.randn(3, 13, 64)
    with torch.no_grad():
        assert torch.allclose(fast_block_forward(ours, x), block(x), atol=1e-5)
        part = fast_block_forward(ours, x, num_queries=2)
        assert torch.allclose(part, block(x)[:, :2], atol=1e-5)
    gx_ref, gp_ref = _grads(block, lambda b, t: b(t), x, weights)
    gx, gp = _grads(ours, fast_block_forward, x, weights)
    assert torch.allclose(gx, gx_ref, atol=1e-4)
    assert len(gp) == len(gp_ref) == 12
    for a, b in zip(gp, gp_ref):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert fallback_counts() == {}
    assert fallbacks == []


# --------------------------------------------------------------- fallbacks
class _WrappedAttention(nn.Module):
    """Another attention module with nn.MultiheadAttention's call signature."""

    def __init__(self, attn):
        super().__init__()
        self.inner = attn

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


class _MyBlock(ResidualAttentionBlock):
    """A subclass: its forward may differ from open_clip's."""


def _replaced_attention():
    block, _ = _pair(QuickGELU, False)
    block.attn = _WrappedAttention(block.attn)
    return block


def _subclassed_block():
    torch.manual_seed(0)
    return _MyBlock(64, 4, act_layer=QuickGELU).eval()


def _sequence_first():
    torch.manual_seed(0)
    return ResidualAttentionBlock(64, 4, batch_first=False).eval()


def _custom_with(**kwargs):
    return lambda: _tiny_vit(nn.GELU, layers=1, **kwargs).transformer.resblocks[0]


def _tanh_gelu():
    block, _ = _pair(lambda: nn.GELU(approximate='tanh'), False)
    return block


def _fp32_layer_norm():
    from open_clip.transformer import LayerNormFp32

    block, _ = _pair(QuickGELU, False)
    norm = LayerNormFp32(64)
    norm.load_state_dict(block.ln_1.state_dict())
    block.ln_1 = norm
    return block


UNSUPPORTED = {
    # name: (block factory, words the reason must contain, whole block falls back)
    'replaced_attention': (
        _replaced_attention,
        ['ResidualAttentionBlock', '_WrappedAttention', 'MultiheadAttention'],
        True,
    ),
    'subclassed_block': (_subclassed_block, ['_MyBlock', 'ResidualAttentionBlock'], True),
    'sequence_first': (_sequence_first, ['MultiheadAttention', 'not batch-first'], True),
    'qk_norm': (_custom_with(qk_norm=True), ['open_clip.transformer.Attention', 'QK norm'], True),
    'scale_heads': (_custom_with(scale_heads=True), ['head scales'], True),
    'scale_attn': (_custom_with(scale_attn=True), ['attention output norm'], True),
    'scale_fc': (_custom_with(scale_fc=True), ['MLP', 'ln=LayerNorm'], False),
    'tanh_gelu': (_tanh_gelu, ['MLP activation', 'GELU'], False),
    'fp32_layer_norm': (_fp32_layer_norm, ['ln_1', 'LayerNormFp32'], True),
}


@pytest.mark.parametrize('name', sorted(UNSUPPORTED))
def test_unsupported_block_falls_back_and_warns_once(fallbacks, name):
    make, words, whole = UNSUPPORTED[name]
    block = make()
    supported, reason = fast_path_supported(block)
    assert not supported
    for word in words:
        assert word in reason
    batch_first = getattr(block.attn, 'batch_first', True)
    x = torch.randn(2, 7, 64) if batch_first else torch.randn(7, 2, 64)
    with torch.no_grad():
        ref = block(x)
        for _ in range(3):
            out = fast_block_forward(block, x)
            if whole:  # the block's own forward, so exactly its result
                assert torch.equal(out, ref)
            else:  # fused attention, unfused MLP
                assert torch.allclose(out, ref, atol=1e-5)
        if batch_first:
            part = fast_block_forward(block, x, num_queries=3)
            assert torch.allclose(part, ref[:, :3], atol=1e-5)
    assert fallback_counts() == {reason: 4 if batch_first else 3}
    assert len(fallbacks) == 1
    message = fallbacks[0].getMessage()
    assert fallbacks[0].levelno == logging.WARNING
    assert message.startswith(f'mmdmpt fast path: {reason}. ')
    assert 'still correct' in message and 'slower' in message and 'memory' in message
    assert ('block(x, attn_mask=...)' if whole else 'mlp(x)') in message


def test_scaled_cosine_attention_is_not_fused():
    # (open_clip 3.3.0's own forward of it fails on 4-d tensors, so only the check here)
    block = _custom_with(scaled_cosine_attn=True)()
    supported, reason = fast_path_supported(block)
    assert not supported and 'scaled cosine attention' in reason


def test_each_reason_warns_once_per_process(fallbacks):
    replaced, subclassed = _replaced_attention(), _subclassed_block()
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        for _ in range(2):
            fast_block_forward(replaced, x)
            fast_block_forward(subclassed, x)
    assert sorted(fallback_counts().values()) == [2, 2]
    assert len(fallbacks) == 2  # one per reason
    assert fallbacks[0].getMessage() != fallbacks[1].getMessage()


# --------------------------------------------------------------- embeddings
@pytest.mark.parametrize('quick_gelu', [True, False])
def test_visual_embeds_equal_open_clip(tiny_cfg, clip_factory, fallbacks, quick_gelu):
    visual = clip_factory(tiny_cfg(layers=1), (64, 32), quick_gelu=quick_gelu).visual
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        ref = visual._embeds(images)
        assert ref.shape == (3, 1 + 8 * 4, 64)
        assert torch.equal(visual_embeds(visual, images), ref)
        assert torch.equal(visual_embeds_from_attributes(visual, images), ref)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            ref_bf16 = visual._embeds(images)
            assert torch.equal(visual_embeds(visual, images), ref_bf16)
            assert torch.equal(visual_embeds_from_attributes(visual, images), ref_bf16)
    assert fallbacks == []


def test_visual_embeds_with_patch_dropout_and_gradients(fallbacks):
    visual = _tiny_vit(patch_dropout=0.5).train()
    images = torch.randn(2, 3, 32, 32)
    outs, grads = [], []
    for fn in (lambda v, x: v._embeds(x), visual_embeds, visual_embeds_from_attributes):
        visual.zero_grad()
        torch.manual_seed(3)
        out = fn(visual, images)
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in visual.parameters() if p.grad is not None])
    assert outs[0].shape == (2, 1 + 8, 64)  # 16 patches, half dropped
    assert len(grads[0]) == 5  # conv1, class and positional embedding, ln_pre weight, bias
    for out, grad in zip(outs[1:], grads[1:]):
        assert torch.equal(out, outs[0])
        assert all(torch.equal(a, b) for a, b in zip(grad, grads[0]))
    assert fallbacks == []


def test_visual_embeds_without_private_method(fallbacks):
    visual = _tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = visual._embeds(images)
        visual._embeds = None  # as if open_clip dropped the private method
        for _ in range(2):
            assert torch.equal(visual_embeds(visual, images), ref)
    assert len(fallbacks) == 1
    message = fallbacks[0].getMessage()
    assert 'VisionTransformer has no _embeds' in message
    assert 'conv1' in message


def test_visual_embeds_missing_attributes(fallbacks):
    with pytest.raises(RuntimeError, match=r"has no \['conv1', 'class_embedding'"):
        visual_embeds(nn.Module(), torch.randn(1, 3, 32, 32))


def test_embed_tokens_in_the_compute_dtype(tiny_cfg, clip_factory, fallbacks):
    visual = clip_factory(tiny_cfg(layers=1), (64, 32)).visual.requires_grad_(False)
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        ref = visual._embeds(images)
        assert torch.equal(embed_tokens(visual, images, torch.float32), ref)  # bitwise in fp32
        with torch.autocast('cpu', dtype=torch.bfloat16):
            ref_bf16 = visual._embeds(images)
        ours = embed_tokens(visual, images, torch.bfloat16)
        cast_once = embed_tokens(visual.to(torch.bfloat16), images, torch.bfloat16)
    assert ours.dtype == ref_bf16.dtype == torch.bfloat16
    assert torch.equal(ours, cast_once)  # a tower cast beforehand gives the same values
    assert (ours.float() - ref.float()).abs().max() <= 2 * (ref_bf16.float() - ref).abs().max()
    assert fallbacks == []


def test_embed_tokens_with_active_patch_dropout_uses_open_clip(fallbacks):
    visual = _tiny_vit(patch_dropout=0.5).train()
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    ours = embed_tokens(visual, images, torch.float32)
    torch.manual_seed(3)
    assert torch.equal(ours, visual._embeds(images))
    assert ours.shape == (2, 1 + 8, 64)  # half of the 16 patches dropped
