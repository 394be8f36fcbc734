"""Fused forward of open_clip's vision blocks, and the embedding step before them.

Everything of mmdmpt that relies on how open_clip builds its vision tower lives
here: the embedding step (:func:`visual_embeds`, and :func:`embed_tokens` in the
compute dtype), the fused block runner (:func:`fast_block_forward`), the
pieces a caller composes into its own block pass over packed rows
(:func:`block_weights`, :func:`layer_norm`, :func:`attention`,
:func:`block_tail`) and the check of whether a block fits the fused path
(:func:`fast_path_supported`).

Dtypes: every function computes in the dtype of its input rows (the *compute
dtype*; under autocast the callers cast the stream once to autocast's dtype).
Weights in another dtype are cast once per call (frozen towers cast to the
compute dtype beforehand, see ``DMPTCLIPViT.set_compute_dtype``, need none),
and LayerNorm runs on the stream's dtype, its kernel accumulating in float32,
instead of autocast's float32 round trip. The code path is the same on every
device.

A block that does not fit runs as it is (``block(x, attn_mask=...)``): the
results stay correct, only slower and more memory-hungry. Each such reason is
logged once per process as a warning and counted (:func:`fallback_counts`),
so that a change of open_clip's internals shows up in the log and in the tests
instead of going unnoticed.
"""

import collections
import logging
from typing import Dict, NamedTuple, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

__all__ = [
    'attention',
    'block_tail',
    'block_weights',
    'compute_dtype_of',
    'embed_tokens',
    'fallback_counts',
    'fast_block_forward',
    'fast_path_supported',
    'layer_norm',
    'visual_embeds',
    'visual_embeds_from_attributes',
]

_QUICK_GELU_SCALE = 1.702  # QuickGELU: x * sigmoid(1.702 x)
# CPU: 4d-wide MLP temporaries are processed in row chunks of at most this size
# (glibc serves blocks above 32 MiB by fresh mmap; see _FusedMLP).
_CPU_CHUNK_BYTES = 24 * 2**20

# open_clip's block classes whose forward the fused path reproduces, each with
# the attention class it holds.
_BLOCK_ATTENTION = {
    'ResidualAttentionBlock': 'torch.nn.MultiheadAttention',
    'CustomResidualAttentionBlock': 'open_clip.transformer.Attention',
}
# Parts of a block the fused path reads.
_BLOCK_PARTS = ('attn', 'ln_1', 'ls_1', 'ln_2', 'ls_2', 'mlp')
# What VisionTransformer._embeds reads (open_clip 3.3.0).
_EMBED_ATTRIBUTES = (
    'conv1',
    'class_embedding',
    'positional_embedding',
    'patch_dropout',
    'ln_pre',
)

_FALLBACKS: collections.Counter = collections.Counter()  # reason -> calls
_WARNED: Set[str] = set()  # reasons already logged in this process


def fallback_counts() -> Dict[str, int]:
    """How often each reason made this module leave its fast path, so far.

    Returns:
        dict[str, int]: Reason (as logged) -> number of calls, since the
        start of the process.
    """
    return dict(_FALLBACKS)


def _fall_back(reason: str, consequence: str) -> None:
    """Count a fallback and log it as a warning, once per process and reason."""
    _FALLBACKS[reason] += 1
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    print_log(
        f'mmdmpt fast path: {reason}. {consequence} (logged once per process and reason)',
        logger='current',
        level=logging.WARNING,
    )


def _name(obj: object) -> str:
    cls = type(obj)
    return f'{cls.__module__}.{cls.__qualname__}'


def _is_open_clip(obj: object, names: Sequence[str]) -> bool:
    """Whether ``obj`` is exactly one of open_clip's classes ``names`` (by name)."""
    cls = type(obj)
    return cls.__name__ in names and cls.__module__.startswith('open_clip')


# ----------------------------------------------------------------- embeddings
def visual_embeds(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The token sequence entering the first block of an open_clip ViT.

    Patch embedding (``conv1``), class token, positional embedding, patch
    dropout and ``ln_pre``, as ``VisionTransformer._embeds`` computes them.
    That private method is used when the tower has it; otherwise the same is
    computed by :func:`visual_embeds_from_attributes`, with a warning (once).

    Args:
        visual (nn.Module): open_clip's ``VisionTransformer``.
        images (Tensor): ``(B, 3, H, W)``.

    Returns:
        Tensor: ``(B, 1 + G, C)`` for a grid of ``G`` patches.
    """
    embeds = getattr(visual, '_embeds', None)
    if callable(embeds):
        return embeds(images)
    _fall_back(
        f'{_name(visual)} has no _embeds method (open_clip changed)',
        'The embeddings are computed from conv1, class_embedding, positional_embedding, '
        'patch_dropout and ln_pre instead, as open_clip 3.3.0 does',
    )
    return visual_embeds_from_attributes(visual, images)


def visual_embeds_from_attributes(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """:func:`visual_embeds` from the tower's public attributes only.

    Reproduces open_clip 3.3.0's ``VisionTransformer._embeds`` operation by
    operation (so the results are bitwise equal).

    Args:
        visual (nn.Module): open_clip's ``VisionTransformer``.
        images (Tensor): ``(B, 3, H, W)``.

    Returns:
        Tensor: ``(B, 1 + G, C)``.

    Raises:
        RuntimeError: If the tower lacks one of the attributes used.
    """
    missing = [name for name in _EMBED_ATTRIBUTES if not hasattr(visual, name)]
    if missing:
        raise RuntimeError(
            f'{_name(visual)} has no {missing}: cannot compute the ViT embeddings; expected '
            f'an open_clip VisionTransformer with {list(_EMBED_ATTRIBUTES)} (open_clip 3.3.0)'
        )
    x = visual.conv1(images)  # (B, C, gh, gw)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, G, C), row-major
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls.to(x.dtype), x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    return visual.ln_pre(x)


def embed_tokens(visual: nn.Module, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The tokens entering the first block, computed in ``dtype``.

    The same function as :func:`visual_embeds` (``conv1``, class token,
    positional embedding, ``ln_pre``), with the images and every weight in
    ``dtype`` (weights in another dtype are cast once) and ``ln_pre`` on
    ``dtype`` (:func:`layer_norm`), so no float32 round trip and no per-call
    cast of a tower already in ``dtype``. In float32 the result equals
    :func:`visual_embeds` bitwise. When patch dropout is active (a tower in
    training mode with ``patch_dropout > 0``), or the tower does not have the
    expected parts, :func:`visual_embeds` computes them instead (in its own
    dtype, then cast).

    Args:
        visual (nn.Module): open_clip's ``VisionTransformer``.
        images (Tensor): ``(B, 3, H, W)``.
        dtype (torch.dtype): The compute dtype.

    Returns:
        Tensor: ``(B, 1 + G, C)`` in ``dtype``.
    """
    dropout = getattr(visual, 'patch_dropout', None)
    plain = isinstance(dropout, nn.Identity) or (
        dropout is not None and (not dropout.training or getattr(dropout, 'prob', 1.0) == 0.0)
    )
    conv = getattr(visual, 'conv1', None)
    if not (
        plain
        and isinstance(conv, nn.Conv2d)
        and conv.padding_mode == 'zeros'
        and all(hasattr(visual, n) for n in _EMBED_ATTRIBUTES)
        and _plain_layer_norm(visual.ln_pre)
    ):
        return visual_embeds(visual, images).to(dtype)
    x = F.conv2d(
        images.to(dtype),
        _cast(conv.weight, dtype),
        _cast(conv.bias, dtype),
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
    )
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, G, C), row-major
    cls = _cast(visual.class_embedding, dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + _cast(visual.positional_embedding, dtype)
    return layer_norm(x, visual.ln_pre)


# ---------------------------------------------------------------- block check
def fast_path_supported(block: nn.Module) -> Tuple[bool, str]:
    """Whether :func:`fast_block_forward` runs ``block`` fully fused, and why not.

    Fused are open_clip's ``ResidualAttentionBlock`` (batch-first
    ``nn.MultiheadAttention`` with one ``in_proj``, no ``bias_k`` /
    ``add_zero_attn``, no cross-attention) and ``CustomResidualAttentionBlock``
    without its optional extras (QK norm, scaled cosine attention, head
    scales, inner / attention / MLP norms, output dropout), each with a
    QuickGELU or exact GELU MLP with biases.

    Args:
        block (nn.Module): A transformer block.

    Returns:
        tuple[bool, str]: ``(True, '')``, or ``(False, reason)`` naming the
        block type and the attention class or MLP part that does not fit.
    """
    reason = _attention_unsupported(block)
    if reason is None:
        reason = _mlp_plan(block.mlp)[1]
    return reason is None, reason or ''


def _attention_unsupported(block: nn.Module) -> Optional[str]:
    """Why the fused attention path cannot run ``block``; None if it can."""
    if not _is_open_clip(block, tuple(_BLOCK_ATTENTION)):
        return (
            f"block {_name(block)} is not one of open_clip's {sorted(_BLOCK_ATTENTION)} "
            '(the fused path reproduces only their forward)'
        )
    missing = [name for name in _BLOCK_PARTS if not hasattr(block, name)]
    if missing:
        return f'block {_name(block)} has no {missing}'
    attn = block.attn
    expected = _BLOCK_ATTENTION[type(block).__name__]
    problems = []
    if expected == 'torch.nn.MultiheadAttention' and type(attn) is nn.MultiheadAttention:
        if not attn.batch_first:
            problems.append('not batch-first')
        if not attn._qkv_same_embed_dim:
            problems.append('separate key / value projections (kdim, vdim)')
        if attn.bias_k is not None:
            problems.append('bias_k / bias_v')
        if attn.add_zero_attn:
            problems.append('add_zero_attn')
        if hasattr(block, 'ln_1_kv'):
            problems.append('cross-attention (ln_1_kv)')
    elif expected == 'open_clip.transformer.Attention' and _is_open_clip(attn, ('Attention',)):
        extras = (
            ('ln_q', 'QK norm (qk_norm)'),
            ('ln_k', 'QK norm (qk_norm)'),
            ('ln_inner', 'inner norm (scale_attn_inner)'),
        )
        for attr, what in extras:
            if not isinstance(getattr(attn, attr, None), nn.Identity) and what not in problems:
                problems.append(what)
        if getattr(attn, 'logit_scale', None) is not None:
            problems.append('scaled cosine attention (scaled_cosine_attn)')
        if getattr(attn, 'head_scale', None) is not None:
            problems.append('head scales (scale_heads)')
        ln_attn = getattr(block, 'ln_attn', None)
        if not (ln_attn is None or isinstance(ln_attn, nn.Identity)):
            problems.append('attention output norm (scale_attn)')
        out_drop = getattr(attn, 'out_drop', None)
        if not (isinstance(out_drop, nn.Dropout) and out_drop.p == 0):
            problems.append('output dropout')
        if not isinstance(getattr(attn, 'attn_drop', None), nn.Dropout):
            problems.append('no attn_drop dropout')
    else:
        return (
            f'block {_name(block)} holds attention {_name(attn)}, not {expected} '
            '(the fused path reproduces only that attention)'
        )
    for name in ('ln_1', 'ln_2'):
        norm = getattr(block, name)
        if not _plain_layer_norm(norm):
            problems.append(
                f'{name} {_name(norm)} (the fused path computes open_clip LayerNorm / '
                'nn.LayerNorm only)'
            )
    if problems:
        return f'block {_name(block)} with {_name(attn)}: ' + ', '.join(problems)
    return None


def _mlp_plan(mlp: nn.Module) -> Tuple[Optional[Tuple[float, str]], Optional[str]]:
    """``((scale, kind), None)`` for a fusable MLP, else ``(None, reason)``.

    Fusable is ``nn.Sequential(c_fc, act, [nn.Identity ...], c_proj)`` with
    linear layers with biases and a QuickGELU or exact GELU ``act`` (named
    ``gelu``, as in open_clip).
    """
    c_fc = getattr(mlp, 'c_fc', None)
    act = getattr(mlp, 'gelu', None)
    c_proj = getattr(mlp, 'c_proj', None)
    children = list(mlp.children())
    if not (
        isinstance(mlp, nn.Sequential)
        and len(children) >= 3
        and children[0] is c_fc
        and children[1] is act
        and children[-1] is c_proj
        and all(isinstance(m, nn.Identity) for m in children[2:-1])
        and isinstance(c_fc, nn.Linear)
        and isinstance(c_proj, nn.Linear)
        and c_fc.bias is not None
        and c_proj.bias is not None
    ):
        layout = ', '.join(f'{name}={type(m).__name__}' for name, m in mlp.named_children())
        return None, (
            f'MLP {_name(mlp)}({layout}) is not c_fc -> gelu -> c_proj with linear layers '
            'with biases'
        )
    if _is_quick_gelu(act):
        return (_QUICK_GELU_SCALE, 'silu'), None
    if isinstance(act, nn.GELU) and act.approximate == 'none':
        return (1.0, 'gelu'), None
    return None, f'MLP activation {_name(act)} is neither open_clip QuickGELU nor exact nn.GELU'


# ---------------------------------------------------------------- fused block
def compute_dtype_of(x: torch.Tensor) -> torch.dtype:
    """The dtype a block computes in for input ``x``: autocast's when it is on, else ``x``'s."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _cast(tensor: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """``tensor`` in ``dtype`` (itself when it already is; None stays None)."""
    if tensor is None or tensor.dtype == dtype:
        return tensor
    return tensor.to(dtype)


def layer_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """A LayerNorm module's function on ``x``, computed in ``x``'s dtype.

    ``torch.native_layer_norm`` accumulates in float32 for float16/bfloat16
    inputs, so the low-precision stream needs no float32 copy (autocast runs
    ``layer_norm`` in float32 and casts its input and output); the weights are
    cast to ``x``'s dtype when they differ. For a float32 ``x`` this is
    exactly ``F.layer_norm``.

    Args:
        x (Tensor): ``(..., C)``.
        norm (nn.Module): ``nn.LayerNorm`` or open_clip's ``LayerNorm``.

    Returns:
        Tensor: Same shape and dtype as ``x``.
    """
    weight, bias = _cast(norm.weight, x.dtype), _cast(norm.bias, x.dtype)
    return torch.native_layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)[0]


def _scale(layer_scale: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ls_1`` / ``ls_2`` of a block: identity, or open_clip's ``LayerScale`` in ``x``'s dtype."""
    if isinstance(layer_scale, nn.Identity):
        return x
    gamma = getattr(layer_scale, 'gamma', None)
    if _is_open_clip(layer_scale, ('LayerScale',)) and isinstance(gamma, torch.Tensor):
        return x * _cast(gamma, x.dtype)
    return layer_scale(x)


class BlockWeights(NamedTuple):
    """The attention weights of one block in the compute dtype (see :func:`block_weights`)."""

    qkv_weight: torch.Tensor
    qkv_bias: Optional[torch.Tensor]
    out_weight: torch.Tensor
    out_bias: Optional[torch.Tensor]
    heads: int
    dropout: float


def block_weights(block: nn.Module, dtype: torch.dtype) -> BlockWeights:
    """The attention projections of a block that fits the fast path, in ``dtype``.

    Weights already in ``dtype`` (a frozen tower cast once) are used as they
    are; others are cast here, once per call, and the caller reuses the result
    for every row it runs through the block.

    Args:
        block (nn.Module): A block for which :func:`fast_path_supported` holds
            (at least its attention part).
        dtype (torch.dtype): The compute dtype.

    Returns:
        BlockWeights: ``in_proj`` and ``out_proj`` weights and biases, the
        number of heads and the attention dropout (0 in eval mode).
    """
    attn = block.attn
    dropout = _attention_dropout(attn) if attn.training else 0.0
    return BlockWeights(
        _cast(attn.in_proj_weight, dtype),
        _cast(attn.in_proj_bias, dtype),
        _cast(attn.out_proj.weight, dtype),
        _cast(attn.out_proj.bias, dtype),
        int(attn.num_heads),
        float(dropout),
    )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    dropout: float = 0.0,
    attn_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Multi-head attention of token rows through ``scaled_dot_product_attention``.

    Args:
        q (Tensor): ``(B, Tq, C)`` queries (may be a strided view).
        k (Tensor): ``(B, T, C)`` keys.
        v (Tensor): ``(B, T, C)`` values.
        heads (int): Number of heads (``C`` divisible by it).
        dropout (float): Dropout on the attention probabilities. Defaults to 0.
        attn_mask (Tensor, optional): Broadcastable to ``(B, heads, Tq, T)``.
            Defaults to None.

    Returns:
        Tensor: ``(B * Tq, C)`` rows (a view when the kernel returns the
        usual ``(B, Tq, heads, d)`` layout).
    """
    batch, queries, width = q.shape
    head_dim = width // heads
    q = q.view(batch, queries, heads, head_dim).transpose(1, 2)
    k = k.view(batch, k.shape[1], heads, head_dim).transpose(1, 2)
    v = v.view(batch, v.shape[1], heads, head_dim).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    return o.transpose(1, 2).reshape(batch * queries, width)


def block_tail(
    block: nn.Module, weights: BlockWeights, residual: torch.Tensor, attended: torch.Tensor
) -> torch.Tensor:
    """The rest of a block after attention, on rows: ``out_proj``, residual, ``ln_2``, MLP.

    Both residual additions are out of place (autograd then needs no copy of
    the stream for them).

    Args:
        block (nn.Module): The block.
        weights (BlockWeights): From :func:`block_weights`.
        residual (Tensor): ``(R, C)`` the rows' block inputs.
        attended (Tensor): ``(R, C)`` their attention outputs (before ``out_proj``).

    Returns:
        Tensor: ``(R, C)`` the block's outputs.
    """
    x = residual + _scale(block.ls_1, F.linear(attended, weights.out_weight, weights.out_bias))
    return x + _scale(block.ls_2, _mlp_forward(block.mlp, layer_norm(x, block.ln_2)))


def fast_block_forward(
    block: nn.Module,
    x: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    num_queries: Optional[int] = None,
    num_const: int = 0,
) -> torch.Tensor:
    """Run an open_clip ``ResidualAttentionBlock`` with its own weights and SDPA.

    Equivalent to ``block(x, attn_mask=attn_mask)`` (up to float rounding) for
    batch-first blocks, with less memory traffic:

    * attention through :func:`torch.nn.functional.scaled_dot_product_attention`
      (one fused kernel; the attention probabilities are never stored);
    * LayerNorm on the stream's own dtype (:func:`layer_norm`);
    * out-of-place residual additions;
    * QuickGELU ``x * sigmoid(1.702 x)`` is computed as
      ``silu(1.702 x) / 1.702`` with both scales folded into the two MLP
      matmuls (``alpha`` / ``beta`` of ``addmm``), so the activation is one
      fused kernel and autograd keeps one tensor for it instead of two.

    Under autocast the block computes in autocast's dtype: ``x`` is cast once
    and the weights once per call (none when they already have that dtype).

    With ``num_queries=n`` only the first ``n`` tokens are computed as
    queries (every token still serves as key and value) and the output has
    ``n`` tokens; the other outputs would be discarded anyway.

    With ``num_const=k`` the caller states that the first ``k`` input tokens
    do not depend on anything trained (e.g. the class and patch tokens at
    the first prompted layer of a frozen tower): their ``ln_1`` and ``q, k, v``
    projections are then computed without autograd, so the backward pass
    skips those rows of the projection's input gradient.

    open_clip's ``CustomResidualAttentionBlock`` without its optional extras
    takes the same path. Any other block (see :func:`fast_path_supported`)
    runs as ``block(x, attn_mask=attn_mask)``, and an MLP that cannot be fused
    as ``mlp(x)``; each reason is logged once per process as a warning and
    counted in :func:`fallback_counts`.

    Args:
        block (nn.Module): The transformer block.
        x (Tensor): ``(B, T, C)``.
        attn_mask (Tensor, optional): Boolean (True = attend) or additive mask
            broadcastable to ``(B, heads, T, T)``. Defaults to None.
        num_queries (int, optional): Compute only the first ``num_queries``
            output tokens. Defaults to None (all ``T``).
        num_const (int): Leading tokens that need no gradient work in the
            ``q, k, v`` projection. Defaults to 0.

    Returns:
        Tensor: ``(B, T, C)``, or ``(B, num_queries, C)``.
    """
    reason = _attention_unsupported(block)
    if reason is not None:
        _fall_back(
            reason,
            'The block runs unfused as block(x, attn_mask=...): results are still correct, '
            'but slower and more memory-hungry',
        )
        out = block(x, attn_mask=attn_mask)
        return out if num_queries is None else out[:, :num_queries]
    batch, length, width = x.shape
    queries = length if num_queries is None else int(num_queries)
    x = x.to(compute_dtype_of(x))
    weights = block_weights(block, x.dtype)
    weight, bias = weights.qkv_weight, weights.qkv_bias
    if queries == length:
        if 0 < num_const < length and x.requires_grad and torch.is_grad_enabled():
            with torch.no_grad():
                qkv_const = F.linear(layer_norm(x[:, :num_const], block.ln_1), weight, bias)
            qkv_rest = F.linear(layer_norm(x[:, num_const:], block.ln_1), weight, bias)
            qkv = torch.cat([qkv_const, qkv_rest], dim=1)
        else:
            qkv = F.linear(layer_norm(x, block.ln_1), weight, bias)
        q, k, v = qkv.split(width, dim=-1)
        residual = x
    else:
        y = layer_norm(x, block.ln_1)
        q = F.linear(y[:, :queries], weight[:width], None if bias is None else bias[:width])
        k, v = F.linear(y, weight[width:], None if bias is None else bias[width:]).split(
            width, dim=-1
        )
        residual = x[:, :queries]
        if attn_mask is not None and attn_mask.dim() >= 2 and attn_mask.shape[-2] == length:
            attn_mask = attn_mask[..., :queries, :]
    o = attention(q, k, v, weights.heads, weights.dropout, attn_mask)
    out = block_tail(block, weights, residual.reshape(batch * queries, width), o)
    return out.view(batch, queries, width)


def _attention_dropout(attn: nn.Module) -> float:
    """The attention-probability dropout of ``nn.MultiheadAttention`` / open_clip ``Attention``."""
    if isinstance(attn, nn.MultiheadAttention):
        return attn.dropout
    return attn.attn_drop.p


def _mlp_forward(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``c_fc -> act -> c_proj`` MLP, computed by :class:`_FusedMLP`.

    QuickGELU and exact GELU MLPs with biases take the fused path; any other
    MLP runs as it is (with a warning, once per reason). The MLP computes in
    the dtype of ``x`` (autocast's dtype when ``x`` is float32 under
    autocast); weights in another dtype are cast once per call.
    """
    plan, reason = _mlp_plan(mlp)
    if plan is None:
        _fall_back(
            reason,
            'The MLP runs unfused as mlp(x): results are still correct, but slower and more '
            'memory-hungry',
        )
        return mlp(x)
    scale, kind = plan
    c_fc, c_proj = mlp.c_fc, mlp.c_proj
    x = x.to(compute_dtype_of(x))
    dtype = x.dtype
    weights = tuple(_cast(w, dtype) for w in (c_fc.weight, c_fc.bias, c_proj.weight, c_proj.bias))
    shape = x.shape
    if torch.compiler.is_compiling():
        # Plain operators for the compiler to fuse; autograd keeps the same tensor
        # (the pre-activation) when the weights are frozen.
        h = torch.addmm(
            weights[1], x.reshape(-1, shape[-1]), weights[0].t(), beta=scale, alpha=scale
        )
        z = F.silu(h) if kind == 'silu' else F.gelu(h)
        out = torch.addmm(weights[3], z, weights[2].t(), alpha=1.0 / scale)
        return out.view(*shape[:-1], out.shape[-1])
    hidden = weights[0].shape[0]
    if x.device.type == 'cpu':
        rows = max(1, _CPU_CHUNK_BYTES // (hidden * x.element_size()))
    else:
        rows = -1
    track = torch.is_grad_enabled()  # (always off inside Function.forward)
    out = _FusedMLP.apply(x.reshape(-1, shape[-1]), *weights, scale, kind, rows, track)
    return out.view(*shape[:-1], out.shape[-1])


class _FusedMLP(torch.autograd.Function):
    """``c_proj(act(c_fc(x)))`` for QuickGELU / GELU with little memory traffic.

    QuickGELU ``a * sigmoid(1.702 a)`` equals ``silu(1.702 a) / 1.702``: the
    scale 1.702 goes into ``c_fc``'s matmul (``addmm`` ``alpha``/``beta``) and
    ``1 / 1.702`` into ``c_proj``'s, so the activation is one fused kernel, and
    in the backward pass both scales cancel. Only the pre-activation ``h`` is
    kept for the backward pass (plus ``x`` when ``c_fc.weight`` is trained;
    the activation output is recomputed when ``c_proj.weight`` is trained),
    instead of the two or three ``4 d``-wide tensors autograd would keep.

    On the CPU the rows are processed in chunks whose ``4 d``-wide temporaries
    stay under :data:`_CPU_CHUNK_BYTES`: larger blocks would each be a fresh
    ``mmap`` from glibc, whose pages the kernel faults in and zeroes on every
    use (measured: 18 ms for a fresh 41 MB tensor vs 1 ms to rewrite one),
    while smaller ones are reused from the heap.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, scale, kind, rows, track):  # noqa: D102
        num_rows = x.shape[0]
        rows = num_rows if rows <= 0 else rows
        needs = ctx.needs_input_grad[:5]
        keep = track and any(needs)
        out = x.new_empty(num_rows, w2.shape[0])
        h_all = x.new_empty(num_rows, w1.shape[0]) if keep else None
        act = F.silu if kind == 'silu' else F.gelu
        with torch.autocast(x.device.type, enabled=False):
            for start in range(0, num_rows, rows):
                stop = min(start + rows, num_rows)
                xs = x[start:stop]
                if keep:
                    h = torch.addmm(b1, xs, w1.t(), beta=scale, alpha=scale, out=h_all[start:stop])
                    z = act(h)
                else:
                    z = torch.addmm(b1, xs, w1.t(), beta=scale, alpha=scale)
                    z = F.silu(z, inplace=True) if kind == 'silu' else F.gelu(z)
                torch.addmm(b2, z, w2.t(), alpha=1.0 / scale, out=out[start:stop])
        if keep:
            ctx.save_for_backward(x if needs[1] else None, h_all, w1, w2)
            ctx.scale, ctx.kind, ctx.rows = scale, kind, rows
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, h_all, w1, w2 = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        scale, kind, rows = ctx.scale, ctx.kind, ctx.rows
        grad = grad.contiguous()
        num_rows = grad.shape[0]
        gx = grad.new_empty(num_rows, w1.shape[1]) if need_x else None
        gw1 = gb1 = gw2 = None
        act = F.silu if kind == 'silu' else F.gelu
        for start in range(0, num_rows, rows):
            stop = min(start + rows, num_rows)
            g = grad[start:stop]
            h = h_all[start:stop]
            if need_w2:
                part = torch.mm(g.t(), act(h))
                gw2 = part if gw2 is None else gw2.add_(part)
            if not (need_x or need_w1 or need_b1):
                continue
            gh = torch.mm(g, w2)  # d loss / d a with a = c_fc(x), see the class note
            if kind == 'silu':
                torch.ops.aten.silu_backward.grad_input(gh, h, grad_input=gh)
            else:
                torch.ops.aten.gelu_backward.grad_input(gh, h, grad_input=gh)
            if need_x:
                torch.mm(gh, w1, out=gx[start:stop])
            if need_w1:
                part = torch.mm(gh.t(), x[start:stop])
                gw1 = part if gw1 is None else gw1.add_(part)
            if need_b1:
                part = gh.sum(0)
                gb1 = part if gb1 is None else gb1.add_(part)
        if gw2 is not None and scale != 1.0:
            gw2.mul_(1.0 / scale)
        gb2 = grad.sum(0) if need_b2 else None
        return gx, gw1, gb1, gw2, gb2, None, None, None, None


def _is_quick_gelu(module: Optional[nn.Module]) -> bool:
    """Whether ``module`` is open_clip's ``QuickGELU`` (without importing open_clip)."""
    cls = type(module)
    return cls.__name__ == 'QuickGELU' and cls.__module__.startswith('open_clip')


def _plain_layer_norm(module: nn.Module) -> bool:
    """Whether ``module`` is ``nn.LayerNorm`` or open_clip's ``LayerNorm`` (same function)."""
    return type(module) is nn.LayerNorm or _is_open_clip(module, ('LayerNorm',))
