"""Numerics of the packed-rows fast path: gradients, the compute dtype, low memory, compile.

The references are computed in the same process, so nothing here depends on
numbers recorded on another machine:

* float32: the independent per-sample reference of ``test_reference_forward``
  (open_clip's own blocks, one sequence at a time), forward *and* gradients;
* bf16: a tower cast once (``set_compute_dtype``) against the float32 tower
  under autocast (bitwise equal), and the error to float32 against the error
  open_clip's own tower has under autocast (its LayerNorm in float32).
"""

import pytest
import torch
from open_clip.transformer import VisionTransformer

from mmdmpt.models.backbones import DMPTCLIPViT

from .test_reference_forward import IMG, _backbone, _inputs, reference_forward

MASK = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])


def _weights(out):
    generator = torch.Generator().manual_seed(7)
    return torch.randn(out.shape, generator=generator)


def _prompt_grads(backbone, out):
    backbone.zero_grad(set_to_none=True)
    (out.float() * _weights(out)).sum().backward()
    return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('mask', [None, MASK], ids=['all_present', 'missing'])
def test_training_gradients_match_reference(tiny_cfg, mask):
    backbone = _backbone(tiny_cfg).train()
    x = _inputs(3, seed=5)
    ours = _prompt_grads(backbone, backbone(x, mask))
    ref = _prompt_grads(backbone, reference_forward(backbone, x, mask))
    assert set(ours) == set(ref) and len(ours) == 11  # 4 x 2 mappings, offsets, SP, bind
    for name, grad in ref.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(ours[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_reference_gradients_detect_a_wrong_stream(tiny_cfg):
    """The gradient comparison can fail: dropping one modality's stream shows."""
    backbone = _backbone(tiny_cfg).train()
    x = _inputs(2, seed=6)
    ref = _prompt_grads(backbone, reference_forward(backbone, x))
    partial = torch.tensor([[True, True, False], [True, True, True]])
    ours = _prompt_grads(backbone, backbone(x, partial))
    diff = (ours['semantic_prompts.prompts'] - ref['semantic_prompts.prompts']).abs().max()
    assert diff > 1e-3


def test_tower_cast_once_equals_autocast_bitwise(tiny_cfg):
    x = _inputs(2, seed=8)
    fp32 = _backbone(tiny_cfg).train()
    cast = _backbone(tiny_cfg).train().set_compute_dtype('bf16')
    frozen = [p for p in cast.visual.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in cast.parameters() if p.requires_grad)
    results = []
    for backbone in (fp32, cast):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = backbone(x)
        assert out.dtype == torch.float32  # the input's dtype
        results.append((out, _prompt_grads(backbone, out)))
    assert torch.equal(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        assert torch.equal(grad, results[1][1][name]), name
    # Without autocast the cast tower still computes in bf16, with the same result.
    with torch.no_grad():
        assert torch.equal(cast(x), results[1][0].detach())


def test_bf16_error_is_that_of_autocast(tiny_cfg, clip_factory):
    """bf16 LayerNorm on the bf16 stream: as close to float32 as open_clip under autocast."""
    cfg = tiny_cfg(layers=4, heads=2, patch_size=16)
    torch.manual_seed(0)
    backbone = DMPTCLIPViT(
        clip_model=cfg,
        img_size=IMG,
        num_modality_prompts=0,
        num_semantic_prompts=0,
        num_bind_prompts=0,
        bind_layers=(),
        quick_gelu=True,
    ).eval()
    with torch.no_grad():  # LayerNorm weights away from 1 / 0, so their rounding matters
        for module in backbone.visual.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.1)
    clip = clip_factory(cfg, IMG, quick_gelu=True)
    clip.visual.load_state_dict(backbone.visual.state_dict())
    assert isinstance(clip.visual, VisionTransformer)
    x = _inputs(4, seed=9)
    captured = {}
    clip.visual.ln_post.register_forward_hook(lambda m, i, o: captured.__setitem__('x', o))
    with torch.no_grad():
        exact = backbone(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            clip.visual(x.flatten(0, 1))
            backbone.set_compute_dtype('bf16')
            ours = backbone(x)
    theirs = captured['x'][:, 0].float().view_as(exact)
    err_ours, err_autocast = (ours - exact).abs(), (theirs - exact).abs()
    assert err_autocast.mean() > 1e-4  # bf16 is visible at all
    assert err_ours.mean() <= 1.5 * err_autocast.mean()
    assert err_ours.max() <= 2.0 * err_autocast.max()


def test_low_memory_mode(tiny_cfg):
    x = _inputs(2, seed=10)
    plain = _backbone(tiny_cfg).train().set_compute_dtype('bf16')
    low = _backbone(tiny_cfg, low_memory=True).train()
    assert low.with_cp and low.compute_dtype == torch.bfloat16
    saved = {}
    results = []
    for name, backbone in (('plain', plain), ('low', low)):
        sizes = {torch.float32: 0, torch.bfloat16: 0}
        own = {t.data_ptr() for t in (*backbone.parameters(), *backbone.buffers())}

        def pack(t, sizes=sizes, own=own):
            if t.is_floating_point() and t.data_ptr() not in own:  # activations only
                sizes[t.dtype] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = backbone(x)
        saved[name] = sizes
        results.append((out, _prompt_grads(backbone, out)))
    # Checkpointing recomputes the same values: outputs and gradients are unchanged.
    assert torch.equal(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=0, atol=0, msg=name)
    # It keeps only the block boundaries, in bf16 (in float32 only the text
    # knowledge rows that the fp32 prompt mapping reads).
    assert sum(saved['low'].values()) < sum(saved['plain'].values()) / 3
    knowledge = low.modality_knowledge  # (M, L_t, d_t), read once per MSP layer
    rows = knowledge.shape[0] * len(low.msp_layers) * knowledge.shape[2]
    assert saved['low'][torch.float32] <= rows * knowledge.element_size()


def test_torch_compile_matches_eager(tiny_cfg):
    """``torch_compile`` (aot_eager on the CPU): the same outputs and gradients as eager."""
    x = _inputs(2, seed=11)
    eager = _backbone(tiny_cfg).train()
    compiled = _backbone(tiny_cfg, torch_compile=dict(backend='aot_eager')).train()
    assert compiled._compiled is not None and eager._compiled is None
    outs = [eager(x), compiled(x)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-6)
    grads = [_prompt_grads(eager, outs[0]), _prompt_grads(compiled, outs[1])]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # evaluation stays eager
        torch.testing.assert_close(compiled.eval()(x), eager.eval()(x), rtol=1e-6, atol=1e-6)


def test_compute_dtype_and_checkpoints(tiny_cfg):
    cast = _backbone(tiny_cfg, compute_dtype='bf16')
    assert cast.compute_dtype == torch.bfloat16
    assert cast.visual.conv1.weight.dtype == torch.bfloat16
    # Trainable tensors stay fp32, exactly: a trainable-only checkpoint round-trips.
    trainable = {k: v for k, v in cast.state_dict().items() if not k.startswith('visual.')}
    fresh = _backbone(tiny_cfg, seed=3)
    fresh.load_state_dict(trainable, strict=False)
    for key, value in trainable.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # A full state dict of the bf16 model loads into a float32 model (upcast, rounded).
    fp32 = _backbone(tiny_cfg, seed=4)
    fp32.load_state_dict(cast.state_dict())
    assert fp32.visual.conv1.weight.dtype == torch.float32
    assert torch.equal(fp32.visual.conv1.weight, cast.visual.conv1.weight.float())
    # ... and back to float32 in place.
    cast.set_compute_dtype(None)
    assert cast.compute_dtype is None and cast.visual.conv1.weight.dtype == torch.float32
    with pytest.raises(ValueError, match='compute_dtype'):
        _backbone(tiny_cfg, compute_dtype='int8')


def test_tower_with_an_unfused_block_runs_per_sequence(tiny_cfg):
    """A block the packed path cannot run (here an fp32 LayerNorm) falls back, still exact."""
    from open_clip.transformer import LayerNormFp32

    from mmdmpt.models.layers import fallback_counts

    backbone = _backbone(tiny_cfg)
    block = backbone.visual.transformer.resblocks[2]
    norm = LayerNormFp32(block.ln_1.normalized_shape)
    norm.load_state_dict(block.ln_1.state_dict())
    block.ln_1 = norm
    assert not backbone._packed_supported()
    before = sum(fallback_counts().values())
    x = _inputs(2, seed=12)
    with torch.no_grad():
        out, part = backbone(x), backbone(x, MASK[:2])
        ref, ref_part = reference_forward(backbone, x), reference_forward(backbone, x, MASK[:2])
    assert (out - ref).abs().max() < 1e-5 and (part - ref_part).abs().max() < 1e-5
    assert sum(fallback_counts().values()) > before  # counted (and logged once)
