"""Fused forward of open_clip's vision blocks, and the embedding step before them.

Everything of mmdmpt that relies on how open_clip builds its vision tower lives
here: the embedding step (:func:`visual_embeds`), the fused block runner
(:func:`fast_block_forward`) and the check of whether a block fits the fused
path (:func:`fast_path_supported`).

A block that does not fit runs as it is (``block(x, attn_mask=...)``): the
results stay correct, only slower and more memory-hungry. Each such reason is
logged once per process as a warning and counted (:func:`fallback_counts`),
so that a change of open_clip's internals shows up in the log and in the tests
instead of going unnoticed.
"""

import collections
import logging
from typing import Dict, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

__all__ = [
    'fallback_counts',
    'fast_block_forward',
    'fast_path_supported',
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
    * the residual additions are done in place on fresh outputs;
    * QuickGELU ``x * sigmoid(1.702 x)`` is computed as
      ``silu(1.702 x) / 1.702`` with both scales folded into the two MLP
      matmuls (``alpha`` / ``beta`` of ``addmm``), so the activation is one
      fused kernel and autograd keeps one tensor for it instead of two.

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
    attn = block.attn
    batch, length, width = x.shape
    queries = length if num_queries is None else int(num_queries)
    heads = attn.num_heads
    head_dim = width // heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if queries == length:
        if 0 < num_const < length and x.requires_grad and torch.is_grad_enabled():
            with torch.no_grad():
                qkv_const = F.linear(block.ln_1(x[:, :num_const]), weight, bias)
            qkv_rest = F.linear(block.ln_1(x[:, num_const:]), weight, bias)
            qkv = torch.cat([qkv_const, qkv_rest], dim=1)
        else:
            qkv = F.linear(block.ln_1(x), weight, bias)
        q, k, v = qkv.view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        residual = x
    else:
        y = block.ln_1(x)
        q = F.linear(y[:, :queries], weight[:width], None if bias is None else bias[:width])
        q = q.view(batch, queries, heads, head_dim).transpose(1, 2)
        kv = F.linear(y, weight[width:], None if bias is None else bias[width:])
        k, v = kv.view(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        residual = x[:, :queries]
        if attn_mask is not None and attn_mask.dim() >= 2 and attn_mask.shape[-2] == length:
            attn_mask = attn_mask[..., :queries, :]
    dropout = _attention_dropout(attn) if attn.training else 0.0
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    o = o.transpose(1, 2).reshape(batch, queries, width)
    x = _add_residual(residual, block.ls_1(F.linear(o, *_linear(attn.out_proj))))
    return _add_residual(x, block.ls_2(_mlp_forward(block.mlp, block.ln_2(x))))


def _attention_dropout(attn: nn.Module) -> float:
    """The attention-probability dropout of ``nn.MultiheadAttention`` / open_clip ``Attention``."""
    if isinstance(attn, nn.MultiheadAttention):
        return attn.dropout
    return attn.attn_drop.p


def _add_residual(residual: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``residual + out``, in place on ``out`` (a fresh tensor) when dtypes allow.

    Under autocast ``out`` may be bf16/fp16 while the residual stream is fp32;
    then the addition is done out of place so that the stream stays fp32 as in
    open_clip. Autograd saves neither operand of an addition, so the in-place
    form is always safe for a fresh ``out``.
    """
    if out.dtype == residual.dtype and out.shape == residual.shape:
        return out.add_(residual)
    return residual + out


def _mlp_forward(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``c_fc -> act -> c_proj`` MLP, computed by :class:`_FusedMLP`.

    QuickGELU and exact GELU MLPs with biases take the fused path; any other
    MLP runs as it is (with a warning, once per reason).
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
    weights = (c_fc.weight, c_fc.bias, c_proj.weight, c_proj.bias)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # The function runs with autocast off: cast once here, as autocast
        # would for the two matmuls (the casts stay differentiable).
        dtype = torch.get_autocast_dtype(device_type)
        x = x.to(dtype)
        weights = tuple(w.to(dtype) for w in weights)
    elif any(w.dtype != x.dtype for w in weights):
        weights = tuple(w.to(x.dtype) for w in weights)
    shape = x.shape
    hidden = weights[0].shape[0]
    if device_type == 'cpu':
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


def _linear(layer: nn.Linear) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    return layer.weight, layer.bias
