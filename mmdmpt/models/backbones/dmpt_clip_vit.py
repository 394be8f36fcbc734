"""The DMPT backbone: a frozen open_clip ViT shared by all modalities, prompted."""

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmdmpt.registry import MODELS
from mmdmpt.structures import MODALITIES, check_modalities
from mmdmpt.structures import modality_words as modality_words_of
from mmdmpt.utils.errors import ConfigError

from ..layers import fast_block_forward, visual_embeds
from ..prompts import DeepPrompts, ModalityPromptGenerator
from ..utils import (
    build_clip,
    extract_modality_knowledge,
    load_clip_weights,
    load_into_clip,
    release_free_memory,
    resolve_clip_config,
    resolve_quick_gelu,
)

FEATURE_TYPES = ('cls', 'cls_proj', 'cls_prompt')


def _parse_layers(layers: Optional[Sequence[int]], num_layers: int, name: str) -> Tuple[int, ...]:
    if layers is None:
        return tuple(range(num_layers))
    out = sorted({int(layer) for layer in layers})
    bad = [layer for layer in out if not 0 <= layer < num_layers]
    if bad:
        raise ConfigError(
            f'model.backbone.{name}: layers {bad} out of range for a {num_layers}-layer tower; '
            f'expected 0-based indices in [0, {num_layers - 1}]'
        )
    return tuple(out)


@MODELS.register_module()
class DMPTCLIPViT(BaseModule):
    """DMPT backbone wrapper: one frozen CLIP ViT for every modality, prompted.

    Per modality ``m`` the sequence entering visual block ``l`` is
    ``[CLS, patches, MSP_l^m, SP_l, (B'_{l-1})]``:

    * ``MSP_l^m = P_l(k_l^m) + E_l``: modality-specific prompts from the
      frozen text encoder's knowledge of the modality word (computed once at
      build time and kept as the buffer ``modality_knowledge``; the text
      tower is deleted afterwards);
    * ``SP_l``: modality-independent semantic prompts, the same parameters for
      every modality;
    * ``B'_{l-1}``: the PromptIBind output of bind layer ``l - 1``.

    Prompts are VPT-deep: at a prompted layer the previous layer's prompt
    outputs are replaced by that layer's prompts; at an unprompted layer after
    a prompted one they are carried through. At each bind layer ``l`` the joint
    sequence ``[B_l; S^1; ...; S^k]`` -- the bind prompts and the semantic
    prompt *outputs of layer l-1* of each present modality -- passes through
    the same frozen block ``l``; its bind outputs ``B'_l`` are appended to every
    modality's sequence at layer ``l + 1`` and dropped after it. The
    modality-specific prompts never enter the joint sequence.

    All present (sample, modality) streams run as one batch through each
    block (equal lengths), the bind sequences as one batch per number of
    present modalities. Absent modalities are not computed; their output
    slice is zero.

    Args:
        clip_model (str | dict): An open_clip model name or a dict config
            (``embed_dim``, ``vision_cfg``, ``text_cfg``; see
            :func:`mmdmpt.models.utils.resolve_clip_config`).
            Defaults to ``'ViT-B-16'``.
        img_size (tuple[int, int]): Input ``(H, W)``; the positional embedding
            is resized (bicubic) once at build time. Defaults to ``(256, 128)``.
        modalities (Sequence[str]): Modality names in input order.
            Defaults to :data:`mmdmpt.structures.MODALITIES`.
        object_name (str): ``'person'`` or ``'vehicle'`` (any word works).
            Defaults to ``'person'``.
        modality_words (dict | Sequence[str], optional): The word for each
            modality in the text template: ``name -> word`` (overriding the
            defaults) or one word per modality. Defaults to None:
            :data:`mmdmpt.structures.DEFAULT_MODALITY_WORDS` (``rgb`` ->
            'visible', ``nir`` -> 'near-infrared', ``tir`` ->
            'thermal-infrared', ``depth``, ``event``, ...); another modality
            needs its word here.
        template (str): Text template with ``{modality}`` and ``{object}``.
            Defaults to ``'a {modality} photo of a {object}.'``.
        num_modality_prompts (int): n_msp, tokens per modality and layer; 0
            disables them. Defaults to 4.
        modality_prompt_layers (Sequence[int], optional): 0-based layers with
            MSP. Defaults to None (all layers).
        num_semantic_prompts (int): n_sp; 0 disables them. Defaults to 8.
        semantic_prompt_layers (Sequence[int], optional): 0-based layers with
            SP. Defaults to None (all layers).
        num_bind_prompts (int): n_b; 0 disables PromptIBind. Defaults to 4.
        bind_layers (Sequence[int] | str): 0-based bind layers; each needs a
            previous layer with semantic prompt outputs and a next layer
            (``1 <= l <= L - 2``). ``'auto'`` gives ``max(1, L // 2 - 1) ..
            L - 2`` (5..10 for 12 layers), restricted to layers after the first
            semantic prompt layer. Defaults to ``'auto'``.
        frozen (bool): Freeze every CLIP weight (True, DMPT) or fine-tune the
            whole visual tower (False, the full fine-tuning baseline; ``proj``
            stays frozen unless ``feature='cls_proj'`` uses it).
            Defaults to True.
        pretrained (str, optional): CLIP weight file (OpenAI TorchScript
            archive, state dict or .safetensors). Defaults to None (random).
        quick_gelu (bool, optional): MLP activation; None chooses
            automatically (see :func:`mmdmpt.models.utils.resolve_quick_gelu`).
            Defaults to None.
        with_cp (bool): Gradient checkpointing of the blocks during training.
            Defaults to False.
        feature (str): Per-modality output: ``'cls'`` (class token after
            ``ln_post``, d_v), ``'cls_proj'`` (also the 512-d projected class
            token, d_v + E) or ``'cls_prompt'`` (also the mean of the last
            layer's semantic prompt outputs after ``ln_post``, 2 d_v).
            Defaults to ``'cls'``.
        init_cfg (dict | list[dict], optional): MMEngine init config.
            Defaults to None.
    """

    def __init__(
        self,
        *,
        clip_model: Union[str, dict] = 'ViT-B-16',
        img_size: Tuple[int, int] = (256, 128),
        modalities: Sequence[str] = MODALITIES,
        object_name: str = 'person',
        modality_words: Optional[Union[Dict[str, str], Sequence[str]]] = None,
        template: str = 'a {modality} photo of a {object}.',
        num_modality_prompts: int = 4,
        modality_prompt_layers: Optional[Sequence[int]] = None,
        num_semantic_prompts: int = 8,
        semantic_prompt_layers: Optional[Sequence[int]] = None,
        num_bind_prompts: int = 4,
        bind_layers: Union[Sequence[int], str] = 'auto',
        frozen: bool = True,
        pretrained: Optional[str] = None,
        quick_gelu: Optional[bool] = None,
        with_cp: bool = False,
        feature: str = 'cls',
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        modalities = check_modalities(modalities, 'model.backbone.modalities')
        if feature not in FEATURE_TYPES:
            raise ConfigError(
                f'feature (model.backbone.feature) must be one of {FEATURE_TYPES}, got {feature!r}'
            )
        for name, value in (
            ('num_modality_prompts', num_modality_prompts),
            ('num_semantic_prompts', num_semantic_prompts),
            ('num_bind_prompts', num_bind_prompts),
        ):
            if int(value) < 0:
                raise ConfigError(f'{name} (model.backbone.{name}) must be >= 0, got {value}')
        self.modalities = modalities
        self.num_modalities = len(modalities)
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.object_name = object_name
        self.template = template
        self.modality_words = modality_words_of(
            modalities, modality_words, 'model.backbone.modality_words'
        )
        self.frozen = bool(frozen)
        self.with_cp = bool(with_cp)
        self.feature = feature
        self.pretrained = pretrained

        # 1. CLIP with (resized) pretrained weights and the right activation.
        cfg, cfg_quick_gelu, model_name = resolve_clip_config(clip_model, self.img_size)
        state_dict, info = (None, None)
        if pretrained is not None:
            state_dict, info = load_clip_weights(pretrained)
        use_quick_gelu, reason = resolve_quick_gelu(quick_gelu, info, cfg_quick_gelu, model_name)
        self.quick_gelu = use_quick_gelu
        print_log(
            f'DMPTCLIPViT: {"QuickGELU" if use_quick_gelu else "GELU"} activation ({reason}).',
            logger='current',
        )
        clip = build_clip(cfg, use_quick_gelu)
        if state_dict is not None:
            load_into_clip(clip, state_dict, pretrained)
            print_log(
                f'DMPTCLIPViT: loaded CLIP weights from {pretrained} ({info["format"]}); '
                f'positional embedding on a {clip.visual.grid_size[0]}x'
                f'{clip.visual.grid_size[1]} grid.',
                logger='current',
            )
        else:
            print_log(
                'DMPTCLIPViT: pretrained=None, the CLIP weights (and the modality knowledge '
                'read from the text tower) are random.',
                logger='current',
                level=logging.WARNING,
            )
        del state_dict

        # 2. Modality knowledge from the frozen text tower, then drop the tower.
        knowledge, text_features, self.text_prompts = extract_modality_knowledge(
            clip, self.modality_words, template, object_name
        )
        self.register_buffer('modality_knowledge', knowledge)  # (M, L_t, d_t)
        self.register_buffer('modality_text_features', text_features)  # (M, E)
        self.visual = clip.visual
        del clip
        release_free_memory()  # the text tower's pages (about 250 MB for ViT-B/16)

        blocks = self.visual.transformer.resblocks
        self.num_layers = num_layers = len(blocks)
        self.embed_dims = embed_dims = int(self.visual.transformer.width)
        self.proj_dims = int(self.visual.proj.shape[1]) if self.visual.proj is not None else 0
        text_layers, text_dims = knowledge.shape[1], knowledge.shape[2]
        patch_h, patch_w = self.visual.patch_size
        patch_dim = 3 * patch_h * patch_w

        # 3. Prompt layout.
        self.num_modality_prompts = int(num_modality_prompts)
        self.num_semantic_prompts = int(num_semantic_prompts)
        self.num_bind_prompts = int(num_bind_prompts)
        self.msp_layers = (
            _parse_layers(modality_prompt_layers, num_layers, 'modality_prompt_layers')
            if self.num_modality_prompts
            else ()
        )
        self.sp_layers = (
            _parse_layers(semantic_prompt_layers, num_layers, 'semantic_prompt_layers')
            if self.num_semantic_prompts
            else ()
        )
        self.bind_layers = self._resolve_bind_layers(bind_layers)
        # Visual layer l reads text layer floor(l * L_t / L) (identity when equal).
        self.text_layer_map = tuple(
            (layer * text_layers) // num_layers for layer in self.msp_layers
        )
        if feature == 'cls_prompt' and not self.sp_layers:
            raise ConfigError(
                "feature='cls_prompt' (model.backbone.feature) needs semantic prompts "
                '(num_semantic_prompts > 0 and semantic_prompt_layers not empty)'
            )

        self.modality_prompts = (
            ModalityPromptGenerator(
                num_layers=len(self.msp_layers),
                num_tokens=self.num_modality_prompts,
                text_dim=text_dims,
                embed_dim=embed_dims,
            )
            if self.msp_layers
            else None
        )
        self.semantic_prompts = (
            DeepPrompts(
                num_layers=len(self.sp_layers),
                num_tokens=self.num_semantic_prompts,
                embed_dim=embed_dims,
                patch_dim=patch_dim,
            )
            if self.sp_layers
            else None
        )
        self.bind_prompts = (
            DeepPrompts(
                num_layers=len(self.bind_layers),
                num_tokens=self.num_bind_prompts,
                embed_dim=embed_dims,
                patch_dim=patch_dim,
            )
            if self.bind_layers
            else None
        )
        self._msp_index = {layer: i for i, layer in enumerate(self.msp_layers)}
        self._sp_index = {layer: i for i, layer in enumerate(self.sp_layers)}
        self._bind_index = {layer: i for i, layer in enumerate(self.bind_layers)}

        # 4. Freezing.
        self.visual.requires_grad_(not self.frozen)
        if self.visual.proj is not None:
            self.visual.proj.requires_grad_(not self.frozen and feature == 'cls_proj')
        prompted = set(self.msp_layers) | set(self.sp_layers) | set(self.bind_layers)
        self._first_grad_layer = (min(prompted) if prompted else num_layers) if self.frozen else 0

        if feature == 'cls':
            self.out_channels = embed_dims
        elif feature == 'cls_proj':
            self.out_channels = embed_dims + self.proj_dims
        else:
            self.out_channels = 2 * embed_dims
        print_log(
            f'DMPTCLIPViT: {num_layers} layers, width {embed_dims}, grid '
            f'{self.visual.grid_size}, MSP layers {list(self.msp_layers)} (x'
            f'{self.num_modality_prompts}, text layers {list(self.text_layer_map)}), SP layers '
            f'{list(self.sp_layers)} (x{self.num_semantic_prompts}), bind layers '
            f'{list(self.bind_layers)} (x{self.num_bind_prompts}), frozen={self.frozen}.',
            logger='current',
        )

    # ------------------------------------------------------------------ setup
    def _resolve_bind_layers(self, bind_layers: Union[Sequence[int], str]) -> Tuple[int, ...]:
        num_layers = self.num_layers
        if not self.num_bind_prompts:
            return ()
        first_sp = min(self.sp_layers) if self.sp_layers else None
        if isinstance(bind_layers, str):
            if bind_layers != 'auto':
                raise ConfigError(
                    f"bind_layers (model.backbone.bind_layers) must be 'auto' or a sequence, got "
                    f'{bind_layers!r}'
                )
            if first_sp is None:
                return ()
            start = max(1, num_layers // 2 - 1, first_sp + 1)
            return tuple(range(start, num_layers - 1))
        layers = tuple(sorted({int(layer) for layer in bind_layers}))
        if not layers:
            return ()
        if first_sp is None:
            raise ConfigError(
                'PromptIBind binds semantic prompt outputs: bind_layers needs '
                'num_semantic_prompts > 0 (or set num_bind_prompts=0 / bind_layers=()).'
            )
        bad = [layer for layer in layers if not 1 <= layer <= num_layers - 2]
        if bad:
            raise ConfigError(
                f'bind_layers {bad} invalid for {num_layers} layers: a bind layer l needs the '
                f'previous layer and a next layer, i.e. 1 <= l <= {num_layers - 2}.'
            )
        early = [layer for layer in layers if layer - 1 < first_sp]
        if early:
            raise ConfigError(
                f'bind_layers {early} come before any semantic prompt output (first semantic '
                f'prompt layer is {first_sp}); each bind layer l needs semantic prompts at a '
                'layer <= l - 1.'
            )
        return layers

    def train(self, mode: bool = True) -> 'DMPTCLIPViT':
        """Set train mode; the frozen CLIP tower always stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.visual.eval()
        return self

    def get_visual_projection(self) -> Optional[torch.Tensor]:
        """CLIP's visual projection ``(d_v, E)`` (frozen), e.g. for alignment."""
        return self.visual.proj

    # ---------------------------------------------------------------- forward
    def _run_block(
        self,
        block: nn.Module,
        x: torch.Tensor,
        num_queries: Optional[int] = None,
        num_const: int = 0,
    ) -> torch.Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled() and x.requires_grad:
            return checkpoint(
                fast_block_forward, block, x, None, num_queries, num_const, use_reentrant=False
            )
        return fast_block_forward(block, x, num_queries=num_queries, num_const=num_const)

    def _bind_groups(
        self,
        mask: Optional[torch.Tensor],
        num_samples: int,
        sample_idx: torch.Tensor,
        mod_idx: torch.Tensor,
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Group samples by their number of present modalities.

        Returns:
            tuple: a list of ``(n_g, k_g)`` stream-index tensors (row i holds
            the streams of one sample, in modality order) and, per stream, the
            row of its sample in the concatenated bind outputs.
        """
        num_mod = self.num_modalities
        device = sample_idx.device
        num_streams = sample_idx.numel()
        if mask is None:
            ids = torch.arange(num_streams, device=device).view(num_samples, num_mod)
            return [ids], sample_idx
        stream_id = torch.full((num_samples, num_mod), -1, dtype=torch.long, device=device)
        stream_id[sample_idx, mod_idx] = torch.arange(num_streams, device=device)
        counts = mask.sum(1)
        groups, order = [], []
        for k in sorted(set(counts.tolist()) - {0}):
            samples = (counts == k).nonzero(as_tuple=True)[0]
            ids = stream_id[samples]
            groups.append(ids[ids >= 0].view(samples.numel(), k))
            order.append(samples)
        order = torch.cat(order)
        row_of_sample = torch.full((num_samples,), -1, dtype=torch.long, device=device)
        row_of_sample[order] = torch.arange(order.numel(), device=device)
        return groups, row_of_sample[sample_idx]

    def forward(
        self, x: torch.Tensor, modality_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Extract per-modality features.

        Args:
            x (Tensor): ``(N, M, 3, H, W)`` normalised images.
            modality_mask (Tensor, optional): ``(N, M)`` bool, True where the
                modality is present. Defaults to None (all present).

        Returns:
            Tensor: ``(N, M, D)`` with ``D = self.out_channels``; absent
            modalities' slices are exactly zero.
        """
        num_mod = self.num_modalities
        if x.dim() != 5 or x.shape[1] != num_mod or x.shape[2] != 3:
            raise ValueError(f'Expected inputs (N, {num_mod}, 3, H, W), got {tuple(x.shape)}')
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f'Input size {tuple(x.shape[-2:])} differs from img_size {self.img_size} the '
                'positional embedding was resized to'
            )
        num_samples = x.shape[0]
        device = x.device
        if modality_mask is None:
            mask = None
            sample_idx = torch.arange(num_samples, device=device).repeat_interleave(num_mod)
            mod_idx = torch.arange(num_mod, device=device).repeat(num_samples)
            images = x.flatten(0, 1)
        else:
            mask = torch.as_tensor(modality_mask, device=device).bool()
            if mask.shape != (num_samples, num_mod):
                raise ValueError(
                    f'modality_mask must be ({num_samples}, {num_mod}), got {tuple(mask.shape)}'
                )
            if bool(mask.all()):
                return self.forward(x, None)
            sample_idx, mod_idx = mask.nonzero(as_tuple=True)
            images = x[sample_idx, mod_idx]
        out = x.new_zeros(num_samples * num_mod, self.out_channels)
        if sample_idx.numel() == 0:
            return out.view(num_samples, num_mod, -1)
        feats = self._forward_streams(images, mask, num_samples, sample_idx, mod_idx)
        out = out.index_copy(0, sample_idx * num_mod + mod_idx, feats.to(out.dtype))
        return out.view(num_samples, num_mod, -1)

    def _forward_streams(
        self,
        images: torch.Tensor,
        mask: Optional[torch.Tensor],
        num_samples: int,
        sample_idx: torch.Tensor,
        mod_idx: torch.Tensor,
    ) -> torch.Tensor:
        """Run all present streams ``(S, 3, H, W)``; return ``(S, D)``.

        The stream sequences live in one ``(S, T, C)`` tensor. Prompt tokens
        occupy slots after the class and patch tokens; when a layer's slot
        layout equals the previous one (the usual case), its new prompts are
        written into their slots in place instead of re-concatenating the
        whole sequence (and autograd then needs no per-slot zero-filled
        gradients either). The last block computes only the class token
        when nothing else is read (``feature`` ``'cls'`` / ``'cls_proj'``),
        and a bind block only its bind outputs.
        """
        visual = self.visual
        blocks = visual.transformer.resblocks
        num_streams = images.shape[0]
        grad_enabled = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad_enabled and self._first_grad_layer == 0):
            seq = visual_embeds(visual, images)  # (S, 1 + G, C): cls, pos-embed, ln_pre
        dtype = seq.dtype
        num_base = seq.shape[1]

        msp_all = None
        if self.modality_prompts is not None:
            knowledge = self.modality_knowledge[:, list(self.text_layer_map)].to(dtype)
            msp_all = self.modality_prompts(knowledge).to(dtype)  # (L_msp, M, n, C)
        groups, bind_rows = (None, None)
        if self.bind_layers:
            groups, bind_rows = self._bind_groups(mask, num_samples, sample_idx, mod_idx)

        slots: Dict[str, Tuple[int, int]] = {}  # prompt name -> (start, length) in seq
        pending_bind = None  # B'_{l-1}: appended at this layer only
        last = len(blocks) - 1
        cls_only = self.feature != 'cls_prompt'
        for layer, block in enumerate(blocks):
            with torch.set_grad_enabled(grad_enabled and layer >= self._first_grad_layer):
                new: Dict[str, torch.Tensor] = {}
                if layer in self._msp_index:
                    new['msp'] = msp_all[self._msp_index[layer]][mod_idx]
                if layer in self._bind_index:
                    # Bind the semantic prompt outputs of layer - 1 of each
                    # sample's present modalities with B_layer in block layer
                    # (read before this layer's prompts overwrite their slot).
                    sp_prev = seq.narrow(1, *slots['sp'])
                    new_bind = self._bind(block, self._bind_index[layer], sp_prev, groups)
                    new_bind = new_bind[bind_rows]  # (S, n_b, C)
                else:
                    new_bind = None
                if layer in self._sp_index:
                    sp = self.semantic_prompts(self._sp_index[layer]).to(dtype)
                    new['sp'] = sp.expand(num_streams, -1, -1)
                if pending_bind is not None:
                    new['bind'] = pending_bind
                seq, slots = self._place_prompts(seq, slots, new, num_base)
                queries = 1 if (layer == last and cls_only) else None
                # At the first layer with gradients of a frozen tower the class
                # and patch tokens are constants: only the prompts need them.
                const = num_base if self.frozen and layer == self._first_grad_layer else 0
                seq = self._run_block(block, seq, queries, const)
                pending_bind = new_bind

        cls = visual.ln_post(seq[:, 0])
        if self.feature == 'cls':
            return cls
        if self.feature == 'cls_proj':
            return torch.cat([cls, cls @ visual.proj], dim=-1)
        sp_out = seq.narrow(1, *slots['sp'])
        return torch.cat([cls, visual.ln_post(sp_out).mean(1)], dim=-1)

    def _bind(
        self,
        block: nn.Module,
        index: int,
        sp_prev: torch.Tensor,
        groups: List[torch.Tensor],
    ) -> torch.Tensor:
        """PromptIBind at one layer: ``[B_l; S^1; ...; S^k]`` through ``block``.

        Returns:
            Tensor: ``(num_samples_in_groups, n_b, C)``, rows in group order.
        """
        bind = self.bind_prompts(index).to(sp_prev.dtype)
        num_bind = bind.shape[0]
        outs = []
        for ids in groups:
            n, k = ids.shape
            semantic = sp_prev[ids.flatten()].reshape(n, k * sp_prev.shape[1], -1)
            joint = torch.cat([bind.expand(n, -1, -1), semantic], dim=1)
            outs.append(self._run_block(block, joint, num_bind))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    @staticmethod
    def _place_prompts(
        seq: torch.Tensor,
        slots: Dict[str, Tuple[int, int]],
        new: Dict[str, torch.Tensor],
        num_base: int,
    ) -> Tuple[torch.Tensor, Dict[str, Tuple[int, int]]]:
        """Lay out ``[base, msp, sp, bind]`` for the next block.

        ``msp`` / ``sp`` keep their previous outputs unless ``new`` replaces
        them (VPT-deep carry-over); ``bind`` exists only when given in
        ``new``. When the slot layout is unchanged the new tokens are copied
        into ``seq`` in place; otherwise the sequence is rebuilt.
        """
        layout = []
        for name in ('msp', 'sp', 'bind'):
            if name in new:
                layout.append((name, new[name].shape[1]))
            elif name in slots and name != 'bind':
                layout.append((name, slots[name][1]))
        start, target = num_base, {}
        for name, length in layout:
            target[name] = (start, length)
            start += length
        if target == slots and seq.shape[1] == start:
            for name, value in new.items():
                seq[:, target[name][0] : target[name][0] + target[name][1]] = value
            return seq, slots
        parts = [seq[:, :num_base]]
        for name, _length in layout:
            parts.append(new[name] if name in new else seq.narrow(1, *slots[name]))
        return (torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]), target
