"""The packed-rows plan of ``DMPTCLIPViT``: which rows each layer computes, and the streams.

Every layer of the DMPT backbone runs its block once on one matrix of packed
rows (the class and patch tokens of every present stream, the prompts, the
bind sequences). Which row groups enter a layer, where they come from and
which of them are queries is fixed by the prompt layout: it is planned here
once, at build time (:func:`build_layer_plans`). :class:`Streams` describes
one forward (counts, the present streams, the compute dtype) and gathers each
stream's keys and values from groups kept once per stream, sample, modality
or for all.
"""

from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import torch

__all__ = ['LayerPlan', 'PromptUse', 'STREAM_GROUPS', 'Streams', 'build_layer_plans']

#: Row groups that are tokens of the modality streams (the others belong to a bind).
STREAM_GROUPS = frozenset({'base', 'q_msp', 'q_sp', 'kv_msp', 'kv_sp', 'bprev'})


class LayerPlan(NamedTuple):
    """What one layer computes (fixed by the prompt layout; see :func:`build_layer_plans`).

    ``groups`` lists the row blocks entering the layer as ``(name, scope,
    tokens per unit)`` (``tokens`` None: the class and patch tokens), query
    groups first; ``sources`` says where each comes from (``'prev'``: the
    previous layer's outputs ``prev_names[name]``; otherwise a key of the
    prompt rows).
    """

    layer: int
    groups: Tuple[Tuple[str, str, Optional[int]], ...]
    sources: Tuple[str, ...]
    prev_names: Dict[str, str]
    num_queries: int
    bind: bool
    bind_semantic: Optional[str]
    cls_only: bool
    grad: bool
    const_base: bool

    @property
    def group_names(self) -> Tuple[str, ...]:  # noqa: D102
        return tuple(name for name, _, _ in self.groups)

    @property
    def query_names(self) -> Tuple[str, ...]:  # noqa: D102
        return self.group_names[: self.num_queries]


class Streams:
    """The streams of one forward: counts, indices and the compute dtype.

    ``mod_idx`` / ``sample_idx`` are None when every modality of every sample
    is present (streams in sample-major order, keys gathered by broadcasting);
    otherwise they index the present streams and ``groups`` / ``bind_rows``
    describe the bind sequences (see ``DMPTCLIPViT._bind_groups``).
    """

    def __init__(
        self,
        *,
        num_samples: int,
        num_modalities: int,
        num_streams: int,
        dtype: torch.dtype,
        sample_idx: Optional[torch.Tensor] = None,
        mod_idx: Optional[torch.Tensor] = None,
    ) -> None:
        self.num_samples = num_samples
        self.num_modalities = num_modalities
        self.num_streams = num_streams
        self.dtype = dtype
        self.sample_idx = sample_idx
        self.mod_idx = mod_idx
        self.groups: Optional[List[torch.Tensor]] = None
        self.bind_rows: Optional[torch.Tensor] = None
        self.num_bind = num_samples  # samples with a bind sequence
        self.num_base = 0  # class and patch tokens per stream

    def tokens(self, num: Optional[int]) -> int:
        """Tokens per unit of a group (None: the class and patch tokens)."""
        return self.num_base if num is None else num

    def rows(self, scope: str, num: Optional[int]) -> int:
        """Rows of a group of ``scope`` with ``num`` tokens per unit."""
        num = self.tokens(num)
        if scope == 'stream':
            return self.num_streams * num
        if scope == 'sample':
            return self.num_bind * num
        if scope == 'modality':
            return self.num_modalities * num
        return num

    def stream_keys(self, parts: List[Tuple[torch.Tensor, str, Optional[int]]]) -> torch.Tensor:
        """Each stream's ``k, v`` rows ``(S, T, 2C)`` from groups of any scope.

        Rows kept once per modality, sample or for all are broadcast (all
        streams present) or gathered (some absent); the order of the keys
        within a stream does not matter to attention.
        """
        pieces = []
        if self.mod_idx is None:
            samples, mods = self.num_samples, self.num_modalities
            for rows, scope, num in parts:
                num = self.tokens(num)
                if scope == 'stream':
                    piece = rows.view(samples, mods, num, -1)
                elif scope == 'modality':
                    piece = rows.view(1, mods, num, -1).expand(samples, -1, -1, -1)
                elif scope == 'sample':
                    piece = rows.view(samples, 1, num, -1).expand(-1, mods, -1, -1)
                else:
                    piece = rows.view(1, 1, num, -1).expand(samples, mods, -1, -1)
                pieces.append(piece)
            keys = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
            return keys.view(self.num_streams, keys.shape[2], keys.shape[3])
        streams = self.num_streams
        for rows, scope, num in parts:
            num = self.tokens(num)
            if scope == 'stream':
                piece = rows.view(streams, num, -1)
            elif scope == 'modality':
                piece = rows.view(self.num_modalities, num, -1).index_select(0, self.mod_idx)
            elif scope == 'sample':
                piece = rows.view(self.num_bind, num, -1).index_select(0, self.bind_rows)
            else:
                piece = rows.view(1, num, -1).expand(streams, -1, -1)
            pieces.append(piece)
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]


class PromptUse(NamedTuple):
    """Which prompt layers serve only as keys (``*_kv``) and which as queries (``*_q``)."""

    msp_kv: FrozenSet[int]
    msp_q: Tuple[int, ...]
    sp_kv: FrozenSet[int]
    sp_q: Tuple[int, ...]


def build_layer_plans(
    *,
    num_layers: int,
    msp_layers: Tuple[int, ...],
    sp_layers: Tuple[int, ...],
    bind_layers: Tuple[int, ...],
    num_modality_prompts: int,
    num_semantic_prompts: int,
    num_bind_prompts: int,
    feature: str,
    frozen: bool,
    first_grad_layer: int,
) -> Tuple[Tuple[LayerPlan, ...], PromptUse]:
    """The packed-rows plan of every layer (see :class:`LayerPlan`), and how prompts are used.

    A prompt kind (MSP, SP) is *new* at its own layers and *carried* at
    an unprompted layer after one. Its outputs at layer ``l`` are read
    later when it is carried to ``l + 1``, when ``l + 1`` binds (SP), or at
    the last layer for ``feature='cls_prompt'`` (SP): only then are its
    rows queries (one copy per stream); otherwise a new kind serves only
    as keys and values, once per modality (MSP) or once for all (SP).

    Args:
        num_layers (int): Blocks of the tower.
        msp_layers (tuple[int]): Layers with modality-specific prompts.
        sp_layers (tuple[int]): Layers with semantic prompts.
        bind_layers (tuple[int]): PromptIBind layers.
        num_modality_prompts (int): MSP tokens per modality and layer.
        num_semantic_prompts (int): SP tokens per layer.
        num_bind_prompts (int): Bind tokens per bind layer.
        feature (str): The backbone's output feature (``'cls_prompt'``
            reads the last layer's SP outputs).
        frozen (bool): Whether the tower is frozen.
        first_grad_layer (int): The first layer autograd must see.

    Returns:
        tuple: One :class:`LayerPlan` per layer, and a :class:`PromptUse`.
    """
    n_msp, n_sp, n_b = num_modality_prompts, num_semantic_prompts, num_bind_prompts

    def status(layers: Tuple[int, ...], layer: int) -> Optional[str]:
        if layer in layers:
            return 'new'
        if layers and layer > min(layers):
            return 'carried'
        return None

    plans = []
    msp_kv, msp_q, sp_kv, sp_q = [], [], [], []
    for layer in range(num_layers):
        last = layer == num_layers - 1
        msp, sp = status(msp_layers, layer), status(sp_layers, layer)
        msp_next = None if last else status(msp_layers, layer + 1)
        msp_out = msp is not None and msp_next == 'carried'
        sp_out = sp is not None and (
            (last and feature == 'cls_prompt')
            or (
                not last and (status(sp_layers, layer + 1) == 'carried' or layer + 1 in bind_layers)
            )
        )
        bind = layer in bind_layers
        groups: List[Tuple[str, str, Optional[int]]] = [('base', 'stream', None)]
        sources, prev = ['prev'], {'base': 'base'}
        for kind, state, out, num, q_list in (
            ('msp', msp, msp_out, n_msp, msp_q),
            ('sp', sp, sp_out, n_sp, sp_q),
        ):
            if out:
                groups.append((f'q_{kind}', 'stream', num))
                sources.append(f'{kind}_q' if state == 'new' else 'prev')
                prev[f'q_{kind}'] = f'q_{kind}'
                if state == 'new':
                    q_list.append(layer)
        if bind:
            groups.append(('bind', 'sample', n_b))
            sources.append('bind_q')
        num_queries = len(groups)
        for kind, state, out, num, kv_list, scope in (
            ('msp', msp, msp_out, n_msp, msp_kv, 'modality'),
            ('sp', sp, sp_out, n_sp, sp_kv, 'shared'),
        ):
            if state is None or out:
                continue
            if state == 'new':
                groups.append((f'kv_{kind}', scope, num))
                sources.append(f'{kind}_kv')
                kv_list.append(layer)
            else:
                groups.append((f'kv_{kind}', 'stream', num))
                sources.append('prev')
                prev[f'kv_{kind}'] = f'q_{kind}'
        if layer - 1 in bind_layers:
            groups.append(('bprev', 'sample', n_b))
            sources.append('prev')
            prev['bprev'] = 'bind'
        bind_semantic = None
        if bind:
            if sp == 'new':
                groups.append(('sp_prev', 'stream', n_sp))
                sources.append('prev')
                prev['sp_prev'] = 'q_sp'
                bind_semantic = 'sp_prev'
            else:
                bind_semantic = 'q_sp' if sp_out else 'kv_sp'
        plans.append(
            LayerPlan(
                layer=layer,
                groups=tuple(groups),
                sources=tuple(sources),
                prev_names=prev,
                num_queries=num_queries,
                bind=bind,
                bind_semantic=bind_semantic,
                cls_only=last and feature != 'cls_prompt',
                grad=not frozen or layer >= first_grad_layer,
                const_base=frozen and layer == first_grad_layer,
            )
        )
    use = PromptUse(
        msp_kv=frozenset(msp_kv), msp_q=tuple(msp_q), sp_kv=frozenset(sp_kv), sp_q=tuple(sp_q)
    )
    return tuple(plans), use
