"""The fused block path (SDPA, fused MLP, partial queries / constants) vs open_clip."""

import copy

import pytest
import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock

import mmdmpt.models.backbones.dmpt_clip_vit as dmpt_vit
from mmdmpt.models.backbones import DMPTCLIPViT, fast_block_forward


def _pair(act, trainable, seed=0):
    torch.manual_seed(seed)
    block = ResidualAttentionBlock(64, 4, act_layer=act).eval().requires_grad_(trainable)
    return block, copy.deepcopy(block)


def _grads(block, fn, x, weights):
    x = x.detach().clone().requires_grad_()
    (fn(block, x) * weights).sum().backward()
    params = [p.grad for p in block.parameters() if p.requires_grad]
    return x.grad, params


@pytest.mark.parametrize('act', [QuickGELU, torch.nn.GELU])
@pytest.mark.parametrize('trainable', [False, True])
@pytest.mark.parametrize('chunk_bytes', [None, 5000])  # 5000 B: chunks of a few rows
def test_fused_block_matches_open_clip(monkeypatch, act, trainable, chunk_bytes):
    if chunk_bytes is not None:
        monkeypatch.setattr(dmpt_vit, '_CPU_CHUNK_BYTES', chunk_bytes)
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
