"""The DMPT backbone: a frozen open_clip ViT shared by all modalities, prompted."""

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmdmpt.registry import MODELS
from mmdmpt.structures import MODALITIES, check_modalities
from mmdmpt.structures import modality_words as modality_words_of
from mmdmpt.utils.errors import ConfigError

from ..layers import (
    attention,
    block_tail,
    block_weights,
    embed_tokens,
    fast_block_forward,
    layer_norm,
    visual_embeds,
)
from ..layers.fast_block import _attention_unsupported as attention_unsupported
from ..prompts import DeepPrompts, ModalityPromptGenerator
from ..utils import (
    autocast_off,
    build_clip,
    extract_modality_knowledge,
    load_clip_weights,
    load_into_clip,
    release_free_memory,
    resolve_clip_config,
    resolve_quick_gelu,
)
from .packed_plan import STREAM_GROUPS, LayerPlan, Streams, build_layer_plans

FEATURE_TYPES = ('cls', 'cls_proj', 'cls_prompt')
#: Accepted ``compute_dtype`` values.
COMPUTE_DTYPES = {
    None: None,
    'fp32': None,
    'float32': None,
    'bf16': torch.bfloat16,
    'bfloat16': torch.bfloat16,
    'fp16': torch.float16,
    'float16': torch.float16,
}


def resolve_compute_dtype(value) -> Optional[torch.dtype]:
    """``compute_dtype`` as a torch dtype (None: float32, no cast).

    Args:
        value (str | torch.dtype | None): ``'bf16'``, ``'fp16'`` (or
            ``'bfloat16'`` / ``'float16'`` / the torch dtypes), or
            None / ``'fp32'``.

    Returns:
        torch.dtype | None: The low-precision dtype, or None.

    Raises:
        ConfigError: For any other value.
    """
    if isinstance(value, torch.dtype):
        value = {torch.bfloat16: 'bf16', torch.float16: 'fp16', torch.float32: None}.get(
            value, str(value)
        )
    if value not in COMPUTE_DTYPES:
        raise ConfigError(
            f'compute_dtype (model.backbone.compute_dtype) must be one of '
            f'{[k for k in COMPUTE_DTYPES if k]} or None, got {value!r}'
        )
    return COMPUTE_DTYPES[value]


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

    All present (sample, modality) streams and the bind sequences of a layer
    run through its block as one matrix of packed rows: ``ln_1`` and the
    ``q, k, v`` projection once for every row, attention per query group on
    the keys of each stream (or bind sequence), ``out_proj``, ``ln_2`` and the
    MLP only for the rows whose outputs are read later. Prompts that only
    serve as keys and values are computed once per modality (or once for
    all). Absent modalities are not computed; their output slice is zero.
    Towers with a block that does not fit this path run one sequence per
    stream instead (:func:`~mmdmpt.models.layers.fast_block_forward`).

    Compute dtype: under autocast the stream runs in autocast's dtype, with
    LayerNorm on that dtype (accumulating in float32). :meth:`set_compute_dtype`
    (or ``compute_dtype``) casts the frozen tower to that dtype once, so
    that no frozen weight is cast again in any forward; the results equal
    those of the float32 tower under autocast bitwise.

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
        compute_dtype (str, optional): ``'bf16'`` / ``'fp16'``: keep the frozen
            tower in that dtype (cast once, here) and compute the backbone in
            it, with or without autocast; the trainable parameters stay
            float32. None: float32 weights; under autocast the stream runs in
            autocast's dtype and the frozen weights are cast per forward.
            ``tools/train.py --amp`` sets it to the AMP dtype (through
            ``ReIDRunner``). Defaults to None.
        low_memory (bool): Low-memory training: gradient checkpointing of every
            block (``with_cp``) with the stored block boundaries in the compute
            dtype, and ``compute_dtype='bf16'`` unless another is given.
            Defaults to False.
        torch_compile (bool | dict): Run the training forward (all modalities
            present) through ``torch.compile`` with static shapes; a dict is
            passed to ``torch.compile`` (e.g. ``dict(mode='reduce-overhead')``
            for CUDA graphs, ``dict(backend='aot_eager')``). Evaluation and
            batches with absent modalities stay eager. Defaults to False.
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
        compute_dtype: Optional[str] = None,
        low_memory: bool = False,
        torch_compile: Union[bool, dict] = False,
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
        self.low_memory = bool(low_memory)
        self.with_cp = bool(with_cp) or self.low_memory
        dtype = resolve_compute_dtype(compute_dtype)
        if dtype is None and self.low_memory:
            dtype = torch.bfloat16
        if torch_compile not in (False, None, True) and not isinstance(torch_compile, dict):
            raise ConfigError(
                'torch_compile (model.backbone.torch_compile) must be a bool or a dict of '
                f'torch.compile arguments, got {torch_compile!r}'
            )
        self.compute_dtype: Optional[torch.dtype] = None
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

        self._plans = self._build_plans()
        self._compiled = None
        if torch_compile:
            options = dict(torch_compile) if isinstance(torch_compile, dict) else {}
            options.setdefault('dynamic', False)
            self._compiled = torch.compile(self._forward_full, **options)
        if dtype is not None:
            self.set_compute_dtype(dtype)

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
            f'{list(self.bind_layers)} (x{self.num_bind_prompts}), frozen={self.frozen}'
            + (f', compute dtype {self.compute_dtype}' if self.compute_dtype else '')
            + (', low-memory' if self.low_memory else '')
            + (', torch.compile' if self._compiled is not None else '')
            + '.',
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

    def _build_plans(self) -> Tuple[LayerPlan, ...]:
        """The packed-rows plan of every layer (:func:`.packed_plan.build_layer_plans`)."""
        plans, use = build_layer_plans(
            num_layers=self.num_layers,
            msp_layers=self.msp_layers,
            sp_layers=self.sp_layers,
            bind_layers=self.bind_layers,
            num_modality_prompts=self.num_modality_prompts,
            num_semantic_prompts=self.num_semantic_prompts,
            num_bind_prompts=self.num_bind_prompts,
            feature=self.feature,
            frozen=self.frozen,
            first_grad_layer=self._first_grad_layer,
        )
        msp_q, sp_q = use.msp_q, use.sp_q
        self._msp_kv_layers, self._msp_q_layers = use.msp_kv, msp_q
        self._sp_kv_layers, self._sp_q_layers = use.sp_kv, sp_q

        def index(layers: Tuple[int, ...], selected: Tuple[int, ...]) -> Optional[torch.Tensor]:
            if tuple(selected) == tuple(layers):
                return None
            return torch.tensor([layers.index(layer) for layer in selected], dtype=torch.long)

        self.register_buffer('_msp_q_idx', index(self.msp_layers, msp_q), persistent=False)
        self.register_buffer('_sp_q_idx', index(self.sp_layers, sp_q), persistent=False)
        text = self.text_layer_map
        contiguous = not text or text == tuple(range(text[0], text[0] + len(text)))
        self.register_buffer(
            '_text_idx',
            None if contiguous else torch.tensor(text, dtype=torch.long),
            persistent=False,
        )
        return plans

    def set_compute_dtype(self, dtype: Union[str, torch.dtype, None]) -> 'DMPTCLIPViT':
        """Keep the frozen tower in ``dtype`` and compute the backbone in it.

        Every frozen floating-point parameter and buffer of the visual tower
        is cast once (in place of its data: the parameter objects, and so an
        optimizer's references, stay the same); trainable parameters stay
        float32 (the master weights). The forward then casts no frozen weight,
        and under autocast of the same dtype its results equal those of the
        float32 tower bitwise (autocast rounds the weights the same way).
        ``None`` / ``'fp32'`` casts them back to float32 (the values keep the
        low-precision rounding).

        Checkpoints: trainable-only checkpoints (DMPT's default) do not hold
        the frozen tower and stay exact. A full state dict of a model in
        ``bf16`` holds its frozen tensors in ``bf16``; it loads into a float32
        model (``load_state_dict`` upcasts), which then has the rounded
        weights.

        Args:
            dtype (str | torch.dtype | None): ``'bf16'`` / ``'fp16'`` (or the
                torch dtypes), or None.

        Returns:
            DMPTCLIPViT: ``self``.
        """
        dtype = resolve_compute_dtype(dtype)
        target = torch.float32 if dtype is None else dtype
        with torch.no_grad():
            for param in self.visual.parameters():
                if not param.requires_grad and param.is_floating_point():
                    param.data = param.data.to(target)
            for module in self.visual.modules():
                for name, buf in module.named_buffers(recurse=False):
                    if buf is not None and buf.is_floating_point():
                        setattr(module, name, buf.to(target))
        self.compute_dtype = dtype
        return self

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
    def _stream_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The compute dtype: the tower's (after :meth:`set_compute_dtype`), else autocast's."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        if torch.is_autocast_enabled(x.device.type):
            return torch.get_autocast_dtype(x.device.type)
        return x.dtype

    def _packed_supported(self) -> bool:
        """Whether every block fits the packed path (else the per-sequence path runs)."""
        return all(attention_unsupported(b) is None for b in self.visual.transformer.resblocks)

    def forward(
        self, x: torch.Tensor, modality_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Extract per-modality features.

        Args:
            x (Tensor): ``(N, M, 3, H, W)`` normalised images.
            modality_mask (Tensor, optional): ``(N, M)`` bool, True where the
                modality is present. Defaults to None (all present; no
                device value is read on the host then).

        Returns:
            Tensor: ``(N, M, D)`` in ``x``'s dtype with ``D = self.out_channels``;
            absent modalities' slices are exactly zero.
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
        dtype = self._stream_dtype(x)
        if modality_mask is not None:
            mask = torch.as_tensor(modality_mask, device=device).bool()
            if mask.shape != (num_samples, num_mod):
                raise ValueError(
                    f'modality_mask must be ({num_samples}, {num_mod}), got {tuple(mask.shape)}'
                )
            if not bool(mask.all()):  # (a host read: only when a mask is passed)
                return self._forward_masked(x, mask, dtype)
        images = x.flatten(0, 1)
        if not self._packed_supported():
            sample_idx = torch.arange(num_samples, device=device).repeat_interleave(num_mod)
            mod_idx = torch.arange(num_mod, device=device).repeat(num_samples)
            feats = self._forward_sequences(images, None, num_samples, sample_idx, mod_idx, dtype)
        elif self._compiled is not None and self.training and torch.is_grad_enabled():
            feats = self._compiled(images, num_samples, dtype)
        else:
            feats = self._forward_full(images, num_samples, dtype)
        return feats.view(num_samples, num_mod, -1).to(x.dtype)

    def _forward_full(self, images: torch.Tensor, num_samples: int, dtype) -> torch.Tensor:
        """All modalities of all samples present: ``(N * M, D)``."""
        ctx = Streams(
            num_samples=num_samples,
            num_modalities=self.num_modalities,
            num_streams=images.shape[0],
            dtype=dtype,
        )
        return self._forward_packed(images, ctx)

    def _forward_masked(self, x: torch.Tensor, mask: torch.Tensor, dtype) -> torch.Tensor:
        num_samples, num_mod = mask.shape
        sample_idx, mod_idx = mask.nonzero(as_tuple=True)
        out = x.new_zeros(num_samples * num_mod, self.out_channels)
        if sample_idx.numel() == 0:
            return out.view(num_samples, num_mod, -1)
        images = x[sample_idx, mod_idx]
        if self._packed_supported():
            ctx = Streams(
                num_samples=num_samples,
                num_modalities=num_mod,
                num_streams=images.shape[0],
                dtype=dtype,
                sample_idx=sample_idx,
                mod_idx=mod_idx,
            )
            if self.bind_layers:
                ctx.groups, ctx.bind_rows = self._bind_groups(
                    mask, num_samples, sample_idx, mod_idx
                )
                ctx.num_bind = sum(int(g.shape[0]) for g in ctx.groups)
            feats = self._forward_packed(images, ctx)
        else:
            feats = self._forward_sequences(images, mask, num_samples, sample_idx, mod_idx, dtype)
        out = out.index_copy(0, sample_idx * num_mod + mod_idx, feats.to(out.dtype))
        return out.view(num_samples, num_mod, -1)

    # ------------------------------------------------------- packed rows path
    def _forward_packed(self, images: torch.Tensor, ctx: Streams) -> torch.Tensor:
        """Run the present streams ``(S, 3, H, W)`` as packed rows; return ``(S, D)``.

        Each block runs once per layer on one ``(R, C)`` matrix of rows (see
        ``docs/method.md``, "Efficiency"): the rows whose outputs are read
        later (class and patch tokens, prompt outputs carried to the next
        layer or read by a bind, the bind prompts of a bind layer) and, after
        them, rows that serve only as keys and values (this layer's new
        prompts, once per modality; the previous bind outputs, once per
        sample; the semantic prompt outputs a bind reads). ``ln_1`` and the
        ``q, k, v`` projection run once on all rows, attention per query group
        on keys gathered per stream (or per sample for a bind), and
        ``out_proj``, ``ln_2`` and the MLP on the query rows only.
        """
        visual = self.visual
        grad_enabled = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad_enabled and self._first_grad_layer == 0):
            tokens = embed_tokens(visual, images, ctx.dtype)  # (S, 1 + G, C)
        num_streams, num_base, width = tokens.shape
        ctx.num_base = num_base
        prompts = self._prompt_rows(ctx)
        out = {'base': tokens.reshape(num_streams * num_base, width)}
        for layer, block in enumerate(visual.transformer.resblocks):
            plan = self._plans[layer]
            with torch.set_grad_enabled(grad_enabled and plan.grad):
                rows = self._layer_rows(plan, out, prompts)
                if (
                    self.with_cp
                    and self.training
                    and torch.is_grad_enabled()
                    and any(r.requires_grad for r in rows)
                ):
                    x = checkpoint(self._packed_layer, block, plan, ctx, *rows, use_reentrant=False)
                else:
                    x = self._packed_layer(block, plan, ctx, *rows)
                sizes = [ctx.rows(scope, n) for _, scope, n in plan.groups[: plan.num_queries]]
                if plan.cls_only:
                    sizes[0] = num_streams
                out = dict(zip(plan.query_names, x.split(sizes)))

        base = out['base']
        cls = base if self._plans[-1].cls_only else base.view(num_streams, num_base, -1)[:, 0]
        cls = layer_norm(cls, visual.ln_post)
        if self.feature == 'cls':
            return cls
        if self.feature == 'cls_proj':
            return torch.cat([cls, cls @ visual.proj.to(cls.dtype)], dim=-1)
        sp_out = out['q_sp'].view(num_streams, self.num_semantic_prompts, -1)
        return torch.cat([cls, layer_norm(sp_out, visual.ln_post).mean(1)], dim=-1)

    def _prompt_rows(self, ctx: Streams) -> Dict[str, Dict[int, torch.Tensor]]:
        """This forward's prompt rows in the compute dtype, per use and layer.

        ``msp_kv`` / ``sp_kv``: new prompts that serve only as keys and values
        (``(M * n_msp, C)`` once per modality, ``(n_sp, C)`` once for all);
        ``msp_q`` / ``sp_q``: new prompts whose outputs are read later, one
        copy per stream (``(S * n, C)``); ``bind_q``: the bind prompts, one
        copy per sample with a bind sequence (``(N_b * n_b, C)``). Each kind is
        made by one operation for all its layers.
        """
        dtype = ctx.dtype
        res: Dict[str, Dict[int, torch.Tensor]] = {}
        num_mod, streams = ctx.num_modalities, ctx.num_streams
        if self.modality_prompts is not None:
            knowledge = self._msp_knowledge()
            with autocast_off(knowledge.device):  # the mapping runs on its fp32 weights
                msp = self.modality_prompts(knowledge)  # (L_msp, M, n, C)
            msp = msp.to(dtype)
            num, width = msp.shape[2], msp.shape[3]
            if self._msp_kv_layers:
                res['msp_kv'] = {
                    layer: part.reshape(num_mod * num, width)
                    for layer, part in zip(self.msp_layers, msp.unbind(0))
                    if layer in self._msp_kv_layers
                }
            if self._msp_q_layers:
                sel = msp if self._msp_q_idx is None else msp.index_select(0, self._msp_q_idx)
                if ctx.mod_idx is None:
                    sel = sel.unsqueeze(1).expand(-1, ctx.num_samples, -1, -1, -1)
                else:
                    sel = sel.index_select(1, ctx.mod_idx)
                sel = sel.reshape(sel.shape[0], streams * num, width)
                res['msp_q'] = dict(zip(self._msp_q_layers, sel.unbind(0)))
        if self.semantic_prompts is not None:
            sp = self.semantic_prompts.prompts.to(dtype)  # (L_sp, n, C)
            if self._sp_kv_layers:
                res['sp_kv'] = {
                    layer: part
                    for layer, part in zip(self.sp_layers, sp.unbind(0))
                    if layer in self._sp_kv_layers
                }
            if self._sp_q_layers:
                sel = sp if self._sp_q_idx is None else sp.index_select(0, self._sp_q_idx)
                sel = sel.unsqueeze(1).expand(-1, streams, -1, -1)
                sel = sel.reshape(sel.shape[0], streams * sp.shape[1], sp.shape[2])
                res['sp_q'] = dict(zip(self._sp_q_layers, sel.unbind(0)))
        if self.bind_prompts is not None:
            bind = self.bind_prompts.prompts.to(dtype)  # (L_b, n_b, C)
            samples = ctx.num_bind
            rows = bind.unsqueeze(1).expand(-1, samples, -1, -1)
            rows = rows.reshape(bind.shape[0], samples * bind.shape[1], bind.shape[2])
            res['bind_q'] = dict(zip(self.bind_layers, rows.unbind(0)))
        return res

    def _msp_knowledge(self) -> torch.Tensor:
        """``(M, L_msp, d_t)``: the text layer's knowledge for each MSP layer (no host data)."""
        if self._text_idx is None:
            start = self.text_layer_map[0]
            return self.modality_knowledge.narrow(1, start, len(self.text_layer_map))
        return self.modality_knowledge.index_select(1, self._text_idx)

    @staticmethod
    def _layer_rows(
        plan: LayerPlan,
        prev: Dict[str, torch.Tensor],
        prompts: Dict[str, Dict[int, torch.Tensor]],
    ) -> List[torch.Tensor]:
        """The row blocks entering one layer, in the order of ``plan.groups``."""
        rows = []
        for name, source in zip(plan.group_names, plan.sources):
            if source == 'prev':
                rows.append(prev[plan.prev_names[name]])
            else:
                rows.append(prompts[source][plan.layer])
        return rows

    def _packed_layer(
        self, block: nn.Module, plan: LayerPlan, ctx: Streams, *rows: torch.Tensor
    ) -> torch.Tensor:
        """One block on packed rows; returns the query rows' outputs ``(R_q, C)``."""
        weights = block_weights(block, ctx.dtype)
        sizes = [r.shape[0] for r in rows]
        packed = torch.cat(rows) if len(rows) > 1 else rows[0]
        total, width = packed.shape
        y = layer_norm(packed, block.ln_1)
        w, b = weights.qkv_weight, weights.qkv_bias
        num_q = plan.num_queries
        q_rows = sum(sizes[:num_q])
        if len(rows) == 1:
            # one group (no prompts): one projection; q, k, v are views of it
            q_all, kv_all = F.linear(y, w, b).split([width, 2 * width], dim=1)
        else:
            # queries only for the query rows; k, v for all rows, which the key
            # gathering copies (so only q and the gathered keys are kept for backward)
            w_q, w_kv = w.split([width, 2 * width])
            b_q, b_kv = (None, None) if b is None else b.split([width, 2 * width])
            if plan.const_base and torch.is_grad_enabled():
                # the class and patch tokens are constants here: no autograd for them
                num_base = sizes[0]
                with torch.no_grad():
                    q_const = F.linear(y[:num_base], w_q, b_q)
                    kv_const = F.linear(y[:num_base], w_kv, b_kv)
                q_all = torch.cat([q_const, F.linear(y[num_base:q_rows], w_q, b_q)])
                kv_all = torch.cat([kv_const, F.linear(y[num_base:], w_kv, b_kv)])
            else:
                q_all = F.linear(y[:q_rows] if q_rows < total else y, w_q, b_q)
                kv_all = F.linear(y, w_kv, b_kv)
        if q_all.shape[0] > q_rows:
            q_all = q_all.split([q_rows, total - q_rows])[0]
        queries = dict(zip(plan.query_names, q_all.split(sizes[:num_q])))
        kvs = dict(zip(plan.group_names, kv_all.split(sizes)))

        streams = ctx.num_streams
        keys = ctx.stream_keys(
            [(kvs[name], scope, n) for name, scope, n in plan.groups if name in STREAM_GROUPS]
        )
        k, v = keys.split(width, dim=-1)
        outs = []
        for name, _scope, num in plan.groups[:num_q]:
            if name == 'bind':
                continue
            q = queries[name].view(streams, ctx.tokens(num), width)
            if name == 'base' and plan.cls_only:
                q = q[:, :1]
            outs.append(attention(q, k, v, weights.heads, weights.dropout))
        if plan.bind:
            outs.append(self._bind_attention(plan, ctx, queries['bind'], kvs, weights))
        attended = torch.cat(outs) if len(outs) > 1 else outs[0]
        if plan.cls_only:
            residual = packed[: sizes[0]].view(streams, sizes[0] // streams, width)[:, 0]
        elif q_rows < total:
            residual = packed[:q_rows]
        else:
            residual = packed
        return block_tail(block, weights, residual, attended)

    def _bind_attention(
        self,
        plan: LayerPlan,
        ctx: Streams,
        queries: torch.Tensor,
        kvs: Dict[str, torch.Tensor],
        weights,
    ) -> torch.Tensor:
        """PromptIBind at one layer: the bind rows attend to ``[B_l; S^1; ...; S^k]`` per sample."""
        num_bind, num_sp = self.num_bind_prompts, self.num_semantic_prompts
        width = queries.shape[1]
        sp_kv = kvs[plan.bind_semantic]  # (S * n_sp, 2C), the SP outputs of layer l - 1
        bind_kv = kvs['bind'].view(ctx.num_bind, num_bind, 2 * width)
        queries = queries.view(ctx.num_bind, num_bind, width)
        if ctx.groups is None:
            sp_kv = sp_kv.view(ctx.num_samples, ctx.num_modalities * num_sp, 2 * width)
            k, v = torch.cat([bind_kv, sp_kv], dim=1).split(width, dim=-1)
            return attention(queries, k, v, weights.heads, weights.dropout)
        sp_kv = sp_kv.view(ctx.num_streams, num_sp, 2 * width)
        outs, start = [], 0
        for ids in ctx.groups:
            count, present = ids.shape
            semantic = sp_kv.index_select(0, ids.flatten()).view(count, present * num_sp, -1)
            joint = torch.cat([bind_kv[start : start + count], semantic], dim=1)
            k, v = joint.split(width, dim=-1)
            q = queries[start : start + count]
            outs.append(attention(q, k, v, weights.heads, weights.dropout))
            start += count
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    # ------------------------------------------------- per-sequence fallback
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

    def _forward_sequences(
        self,
        images: torch.Tensor,
        mask: Optional[torch.Tensor],
        num_samples: int,
        sample_idx: torch.Tensor,
        mod_idx: torch.Tensor,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Run all present streams ``(S, 3, H, W)`` one sequence per stream; return ``(S, D)``.

        The path for towers with a block that does not fit the packed path
        (:func:`~mmdmpt.models.layers.fast_path_supported`); each block runs
        through :func:`~mmdmpt.models.layers.fast_block_forward`, which falls
        back to the block's own forward with a warning.

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
            seq = visual_embeds(visual, images).to(dtype)  # (S, 1 + G, C)
        num_base = seq.shape[1]

        msp_all = None
        if self.modality_prompts is not None:
            with autocast_off(images.device):
                msp_all = self.modality_prompts(self._msp_knowledge()).to(dtype)
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

        cls = layer_norm(seq[:, 0], visual.ln_post)
        if self.feature == 'cls':
            return cls
        if self.feature == 'cls_proj':
            return torch.cat([cls, cls @ visual.proj.to(cls.dtype)], dim=-1)
        sp_out = seq.narrow(1, *slots['sp'])
        return torch.cat([cls, layer_norm(sp_out, visual.ln_post).mean(1)], dim=-1)

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
