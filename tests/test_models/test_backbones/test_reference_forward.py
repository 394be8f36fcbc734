"""DMPTCLIPViT against an independent, per-sample reference of the documented method.

The reference below is written from the class docstring of ``DMPTCLIPViT`` and
``docs/method.md`` only. It uses open_clip's own modules (``block(x,
attn_mask=None)`` of each ``ResidualAttentionBlock``, ``conv1``,
``class_embedding``, ``positional_embedding``, ``ln_pre``, ``ln_post``,
``proj``) and reads from the backbone nothing but its parameters, the
knowledge buffer and the layer lists. It runs one sample at a time, one
modality at a time and one layer at a time, in plain Python loops; nothing is
batched and none of the backbone's forward helpers (``fast_block_forward``,
``_forward_streams``, ``_bind``, ``_place_prompts``) is used.

The method, per sample, for each present modality ``m`` (in modality order):

* the sequence entering block ``l`` is ``[CLS, patches, MSP_l^m, SP_l, (B'_{l-1})]``;
* ``MSP_l^m = P_l(k_l^m) + E_l``, ``k_l^m`` the knowledge of text layer
  ``floor(l * L_t / L)`` of modality ``m``;
* VPT-deep: a prompted layer replaces the previous prompt outputs with its own
  prompts, an unprompted layer carries them through; no prompts before the
  first prompted layer;
* at bind layer ``l`` the joint sequence ``[B_l; S^1; ...; S^k]`` (bind
  prompts, then the semantic prompt outputs of layer ``l - 1`` of each
  present modality) goes through block ``l``; its first ``n_b`` outputs
  ``B'_l`` are appended to every modality's sequence at layer ``l + 1`` and
  their outputs of that layer are dropped;
* the feature is ``ln_post`` of the final class token (``'cls'``), plus
  ``ln_post(CLS) @ proj`` (``'cls_proj'``) or plus the mean over tokens of
  ``ln_post`` of the last layer's semantic prompt outputs (``'cls_prompt'``).

Absent modalities are not computed and their output slice is zero.
"""

import pytest
import torch

from mmdmpt.models.backbones import DMPTCLIPViT

IMG = (64, 32)  # 4x2 grid with patch 16
TOL = 1e-5


# --------------------------------------------------------------- reference
def _run_open_clip_block(block, tokens):
    """One open_clip ``ResidualAttentionBlock`` on one sequence ``(T, C)``."""
    if block.attn.batch_first:
        return block(tokens.unsqueeze(0), attn_mask=None).squeeze(0)
    return block(tokens.unsqueeze(1), attn_mask=None).squeeze(1)


def _embed(visual, image):
    """``[CLS, patches]`` of one image ``(3, H, W)`` after ``ln_pre``: ``(1 + G, C)``."""
    patches = visual.conv1(image.unsqueeze(0))[0]  # (C, gh, gw)
    patches = patches.flatten(1).t()  # (G, C), row-major over the grid
    tokens = torch.cat([visual.class_embedding.view(1, -1), patches], dim=0)
    tokens = tokens + visual.positional_embedding
    return visual.ln_pre(tokens)


def reference_sample(backbone, images, present, bind_prompts=None):
    """Features of one sample's present modalities, per the documented method.

    Args:
        backbone (DMPTCLIPViT): Source of the frozen tower and the prompts.
        images (Tensor): ``(M, 3, H, W)``, one sample.
        present (list[int]): Indices of the present modalities.
        bind_prompts (Tensor, optional): ``(len(bind_layers), n_b, C)`` to use
            instead of the backbone's bind prompts (for the can-fail check).

    Returns:
        dict[int, Tensor]: Modality index -> feature ``(D,)``.
    """
    visual = backbone.visual
    blocks = list(visual.transformer.resblocks)
    num_layers = len(blocks)
    text_layers = backbone.modality_knowledge.shape[1]
    msp_layers = list(backbone.msp_layers)
    sp_layers = list(backbone.sp_layers)
    bind_layers = list(backbone.bind_layers)
    if bind_layers and bind_prompts is None:
        bind_prompts = backbone.bind_prompts.prompts

    # Per modality: the current [CLS, patches] tokens and prompt tokens (None
    # before the first layer that has them).
    base = {m: _embed(visual, images[m]) for m in present}
    msp = {m: None for m in present}
    sp = {m: None for m in present}
    bind_in = None  # B'_{l-1}: only for the layer right after a bind layer

    for layer in range(num_layers):
        block = blocks[layer]

        # PromptIBind at this layer: B_l and the semantic prompt outputs of
        # layer l-1 (the current `sp`, before this layer's prompts replace it)
        # of every present modality, through the same block.
        bind_out = None
        if layer in bind_layers:
            own = bind_prompts[bind_layers.index(layer)]
            joint = torch.cat([own] + [sp[m] for m in present], dim=0)
            bind_out = _run_open_clip_block(block, joint)[: own.shape[0]]

        for m in present:
            # VPT-deep: this layer's prompts replace the previous outputs;
            # otherwise the previous outputs are carried through.
            if layer in msp_layers:
                i = msp_layers.index(layer)
                text_layer = (layer * text_layers) // num_layers
                knowledge = backbone.modality_knowledge[m, text_layer]
                mapping = backbone.modality_prompts.mappings[i]
                offsets = backbone.modality_prompts.offsets[i]  # E_l (n_msp, C)
                msp[m] = mapping(knowledge).unsqueeze(0) + offsets
            if layer in sp_layers:
                sp[m] = backbone.semantic_prompts.prompts[sp_layers.index(layer)]

            parts = [base[m]]
            if msp[m] is not None:
                parts.append(msp[m])
            if sp[m] is not None:
                parts.append(sp[m])
            if bind_in is not None:
                parts.append(bind_in)
            out = _run_open_clip_block(block, torch.cat(parts, dim=0))

            start = base[m].shape[0]
            base[m] = out[:start]
            if msp[m] is not None:
                msp[m] = out[start : start + msp[m].shape[0]]
                start += msp[m].shape[0]
            if sp[m] is not None:
                sp[m] = out[start : start + sp[m].shape[0]]
                start += sp[m].shape[0]
            # The outputs of B'_{l-1} (if any) are dropped here.
        bind_in = bind_out

    feats = {}
    for m in present:
        cls = visual.ln_post(base[m][0])
        if backbone.feature == 'cls':
            feats[m] = cls
        elif backbone.feature == 'cls_proj':
            feats[m] = torch.cat([cls, cls @ visual.proj])
        else:
            feats[m] = torch.cat([cls, visual.ln_post(sp[m]).mean(0)])
    return feats


def reference_forward(backbone, x, mask=None):
    """``(N, M, D)`` features, one sample at a time; absent slices are zero."""
    num_samples, num_mod = x.shape[:2]
    if mask is None:
        mask = torch.ones(num_samples, num_mod, dtype=torch.bool)
    out = torch.zeros(num_samples, num_mod, backbone.out_channels)
    for n in range(num_samples):
        present = [m for m in range(num_mod) if mask[n, m]]
        if not present:
            continue
        for m, feat in reference_sample(backbone, x[n], present).items():
            out[n, m] = feat
    return out


# ------------------------------------------------------------------ helpers
def _backbone(tiny_cfg, seed=0, **kwargs):
    torch.manual_seed(seed)
    backbone = DMPTCLIPViT(
        clip_model=tiny_cfg(layers=4, heads=2, patch_size=16), img_size=IMG, **kwargs
    )
    # Prompts well away from their small init, so that every prompt matters.
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in (backbone.semantic_prompts, backbone.bind_prompts):
            if module is not None:
                module.prompts.copy_(torch.randn(module.prompts.shape, generator=generator))
        if backbone.modality_prompts is not None:
            offsets = backbone.modality_prompts.offsets
            offsets.copy_(0.5 * torch.randn(offsets.shape, generator=generator))
    backbone.eval()
    assert backbone.embed_dims == 64 and backbone.num_layers == 4
    assert tuple(backbone.visual.grid_size) == (4, 2)
    return backbone


def _inputs(num_samples, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_samples, 3, 3, *IMG, generator=generator)


def _max_diff(a, b):
    return (a - b).abs().max().item()


# -------------------------------------------------------------------- tests
@pytest.mark.parametrize('feature', ['cls', 'cls_proj', 'cls_prompt'])
def test_default_knobs_match_reference(tiny_cfg, feature):
    backbone = _backbone(tiny_cfg, feature=feature)
    # The documented defaults: MSP and SP on every layer, bind layers 'auto'
    # = max(1, L // 2 - 1) .. L - 2 for L = 4.
    assert backbone.msp_layers == (0, 1, 2, 3)
    assert backbone.sp_layers == (0, 1, 2, 3)
    assert backbone.bind_layers == (1, 2)
    x = _inputs(2)
    with torch.no_grad():
        out = backbone(x)
        ref = reference_forward(backbone, x)
    assert out.dtype == torch.float32
    assert out.shape == ref.shape == (2, 3, backbone.out_channels)
    assert _max_diff(out, ref) < TOL


@pytest.mark.parametrize(
    ('msp_layers', 'sp_layers', 'bind_layers', 'feature'),
    [
        # MSP carried through 1 and 3, SP through 3; B'_2 joins at layer 3.
        ((0, 2), (1, 2), (2,), 'cls_prompt'),
        # VPT-shallow SP carried through every layer; MSP joins late, before SP.
        ((2, 3), (0,), (1,), 'cls'),
    ],
)
def test_sparse_layers_match_reference(tiny_cfg, msp_layers, sp_layers, bind_layers, feature):
    backbone = _backbone(
        tiny_cfg,
        modality_prompt_layers=msp_layers,
        semantic_prompt_layers=sp_layers,
        bind_layers=bind_layers,
        feature=feature,
    )
    assert backbone.msp_layers == msp_layers
    assert backbone.sp_layers == sp_layers
    assert backbone.bind_layers == bind_layers
    x = _inputs(2, seed=1)
    with torch.no_grad():
        ref = reference_forward(backbone, x)
        out = backbone(x)
    assert _max_diff(out, ref) < TOL
    # With autograd on (the prompts require grad) the backbone takes other
    # code paths; the values must not change.
    out_grad = backbone(x)
    assert out_grad.requires_grad
    assert _max_diff(out_grad.detach(), ref) < TOL


@pytest.mark.parametrize('feature', ['cls', 'cls_proj', 'cls_prompt'])
def test_missing_modalities_match_reference(tiny_cfg, feature):
    backbone = _backbone(tiny_cfg, feature=feature)
    assert backbone.bind_layers == (1, 2)
    x = _inputs(5, seed=2)
    mask = torch.tensor(
        [
            [True, True, True],
            [True, False, True],  # one missing
            [False, True, False],  # two missing
            [False, False, True],  # two missing
            [False, False, False],  # all missing
        ]
    )
    with torch.no_grad():
        out = backbone(x, mask)
        ref = reference_forward(backbone, x, mask)
    assert out.shape == (5, 3, backbone.out_channels)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))  # exactly zero
    assert _max_diff(out[mask], ref[mask]) < TOL
    # Binding the absent modalities as well (the whole of x[1]) gives other
    # features for the present ones: the reference distinguishes the readings.
    with torch.no_grad():
        all_bound = reference_sample(backbone, x[1], [0, 1, 2])
    assert _max_diff(out[1, 0], all_bound[0]) > 100 * TOL
    assert _max_diff(out[1, 2], all_bound[2]) > 100 * TOL


def test_reference_detects_a_wrong_bind_prompt(tiny_cfg):
    """The comparison can fail: one changed bind token in the reference shows."""
    backbone = _backbone(tiny_cfg)
    x = _inputs(1, seed=3)
    with torch.no_grad():
        out = backbone(x)
        exact = reference_sample(backbone, x[0], [0, 1, 2])
        wrong_prompts = backbone.bind_prompts.prompts.clone()
        # One token of B_1, changed by a random vector (a constant shift of a
        # token would be invisible: every use of it passes a LayerNorm).
        generator = torch.Generator().manual_seed(4)
        wrong_prompts[0, 1] += 0.5 * torch.randn(wrong_prompts.shape[-1], generator=generator)
        wrong = reference_sample(backbone, x[0], [0, 1, 2], bind_prompts=wrong_prompts)
    for m in range(3):
        assert _max_diff(out[0, m], exact[m]) < TOL
        assert _max_diff(out[0, m], wrong[m]) > 100 * TOL
