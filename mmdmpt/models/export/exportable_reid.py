"""The test-mode ReID model as one static graph: any modality mask, no data-dependent branches.

:class:`~mmdmpt.models.DMPTCLIPViT` groups its streams by the set of present
modalities (``mask.nonzero``, one bind batch per number of present
modalities, a shortcut when every modality is present). That is the fast
way to run it eagerly, but a graph exporter records one path through such
code, valid for one mask only. :class:`ExportableReID` computes the same
test feature with masking arithmetic instead:

* every (sample, modality) stream runs through the tower, absent ones too
  (on zero images);
* each PromptIBind sequence holds the bind prompts and the semantic prompt
  outputs of *all* M modalities; the tokens of absent modalities are
  excluded from attention (their keys get ``-inf``), which is what leaving
  them out of the sequence does (there is no positional embedding in a bind
  sequence, so the order of the keys does not matter);
* absent modalities' backbone features are set to zero before the head, as
  the backbone returns them.

The normalisation of the model's data preprocessor is inside the graph: the
inputs are ``0-255`` RGB images.

Only the backbone's public parts are read -- the prompt modules, the frozen
``visual`` tower (``conv1``, ``class_embedding``, ``positional_embedding``,
``ln_pre``, the blocks' ``ln_1`` / ``attn`` / ``ls_1`` / ``ln_2`` / ``mlp`` /
``ls_2``, ``ln_post``, ``proj``), the modality knowledge buffer and the layer
layout attributes -- following the method as docs/method.md and the backbone's
docstring state it. The eager backbone stays the reference: the tests compare
the two for every mask.
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement
from torch import nn

from mmdmpt.utils.errors import ConfigError

__all__ = ['ExportableReID', 'block_forward', 'preprocessor_stats']

#: Backbone attributes the wrapper reads (the prompt layout and its modules).
_BACKBONE_ATTRIBUTES = (
    'visual',
    'modalities',
    'img_size',
    'feature',
    'out_channels',
    'msp_layers',
    'sp_layers',
    'bind_layers',
    'text_layer_map',
    'modality_prompts',
    'semantic_prompts',
    'bind_prompts',
    'modality_knowledge',
)
#: ``VisionTransformer`` parts of open_clip the wrapper reads.
_VISUAL_ATTRIBUTES = (
    'conv1',
    'class_embedding',
    'positional_embedding',
    'patch_dropout',
    'ln_pre',
    'transformer',
    'ln_post',
    'proj',
)
_BLOCK_PARTS = ('ln_1', 'attn', 'ls_1', 'ln_2', 'mlp', 'ls_2')


def preprocessor_stats(
    preprocessor: nn.Module, modalities: Sequence[str]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-modality ``mean`` / ``std`` (0-255 scale) that a data preprocessor applies.

    The preprocessor is run on constant batches (all pixels 0, then 255) of
    ``len(modalities)`` modalities whose data samples name the modalities,
    so every form of its statistics (one value, one per channel, one per
    modality, one per modality name) gives what it really computes:
    ``out = (x - mean) / std``. A preprocessor that only moves data gives
    mean 0 and std 1. A third probe (value 100) checks that the result is
    such a per-channel affine map.

    Args:
        preprocessor (nn.Module): The model's data preprocessor (called as
            ``preprocessor({'inputs': ..., 'data_samples': ...}, False)``).
        modalities (Sequence[str]): The modality order of the model.

    Returns:
        tuple[Tensor, Tensor]: ``mean`` and ``std``, each float32 ``(M, 3)``.

    Raises:
        ConfigError: If the preprocessor is not a per-channel affine map of
            the pixels (the graph could not reproduce it).
    """
    num_mod = len(modalities)

    def probe(value: int) -> torch.Tensor:
        inputs = torch.full((1, num_mod, 3, 1, 1), value, dtype=torch.uint8)
        samples = [BaseDataElement(metainfo=dict(modalities=tuple(modalities)))]
        with torch.no_grad():
            out = preprocessor(dict(inputs=inputs, data_samples=samples), False)['inputs']
        return out.detach().to('cpu', torch.float64).reshape(num_mod, 3)

    low, high, mid = probe(0), probe(255), probe(100)
    scale = (high - low) / 255.0  # 1 / std
    if not bool((scale > 0).all()):
        raise ConfigError(
            f'data preprocessor {type(preprocessor).__name__}: expected (x - mean) / std with '
            f'std > 0 per modality and channel; got outputs {low.tolist()} for 0 and '
            f'{high.tolist()} for 255'
        )
    std = 1.0 / scale
    mean = -low * std
    expected = (100.0 - mean) / std
    if not torch.allclose(mid, expected, rtol=1e-5, atol=1e-5):
        raise ConfigError(
            f'data preprocessor {type(preprocessor).__name__} is not a per-channel '
            '(x - mean) / std map of the pixels; the exported graph can only hold such a '
            'normalisation'
        )
    return mean.float(), std.float()


def _check_attributes(obj: object, names: Sequence[str], what: str) -> None:
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise ConfigError(
            f'{what} {type(obj).__name__} has no {missing}: export supports the DMPTCLIPViT '
            'backbone on an open_clip VisionTransformer'
        )


def _check_block(block: nn.Module, index: int) -> None:
    _check_attributes(block, _BLOCK_PARTS, f'visual block {index}')
    attn = block.attn
    problems = []
    if not isinstance(attn, nn.MultiheadAttention):
        problems.append(f'attention {type(attn).__name__} (expected nn.MultiheadAttention)')
    else:
        if not attn.batch_first:
            problems.append('attention not batch-first')
        if not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
            problems.append('separate key / value projections')
        if attn.bias_k is not None or attn.add_zero_attn:
            problems.append('bias_k / add_zero_attn')
    if hasattr(block, 'ln_1_kv'):
        problems.append('cross-attention')
    if problems:
        raise ConfigError(
            f'visual block {index} ({type(block).__name__}) cannot be exported: '
            f'{", ".join(problems)}; export supports open_clip ResidualAttentionBlock'
        )


def block_forward(
    block: nn.Module,
    x: torch.Tensor,
    key_keep: Optional[torch.Tensor] = None,
    num_queries: Optional[int] = None,
) -> torch.Tensor:
    """An open_clip ``ResidualAttentionBlock`` in plain operators, with a key mask.

    ``x + ls_1(attn(ln_1(x)))``, then ``+ ls_2(mlp(ln_2(x)))``, with the
    attention written as matmuls and a softmax (no fused kernels, which
    exporters may not know).

    Args:
        block (nn.Module): The block (see :func:`_check_block`).
        x (Tensor): ``(B, T, C)``.
        key_keep (Tensor, optional): ``(B, T)`` bool: which tokens serve as
            keys / values (at least one per row). Defaults to None (all).
        num_queries (int, optional): Compute only the first ``num_queries``
            outputs. Defaults to None (all ``T``).

    Returns:
        Tensor: ``(B, T, C)`` or ``(B, num_queries, C)``.
    """
    attn = block.attn
    width = x.shape[-1]
    heads = attn.num_heads
    head_dim = width // heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    y = block.ln_1(x)
    if num_queries is None:
        residual = x
        q_in = y
    else:
        residual = x[:, :num_queries]
        q_in = y[:, :num_queries]
    q = F.linear(q_in, weight[:width], None if bias is None else bias[:width])
    kv = F.linear(y, weight[width:], None if bias is None else bias[width:])
    q = q.reshape(q.shape[0], q.shape[1], heads, head_dim).transpose(1, 2)
    k, v = kv.reshape(kv.shape[0], kv.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
    scores = torch.matmul(q * (head_dim**-0.5), k.transpose(-2, -1))  # (B, h, Tq, T)
    if key_keep is not None:
        scores = scores.masked_fill(~key_keep[:, None, None, :], float('-inf'))
    out = torch.matmul(scores.softmax(dim=-1), v)  # (B, h, Tq, d)
    out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], width)
    x = residual + block.ls_1(attn.out_proj(out))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class ExportableReID(nn.Module):
    """A :class:`~mmdmpt.models.MultiModalReID` in test mode, as a static graph.

    ``forward(images, modality_mask)`` equals
    ``model(preprocessor(images), data_samples with modality_mask, mode='tensor')``
    for every mask (up to float rounding; see the module docstring for how),
    with no Python branch on the data, so that a graph exporter records the
    whole computation once. Absent modalities' images are ignored (any
    values; they are zeroed after the normalisation); a sample with no
    modality present gets a zero feature.

    The wrapper shares the model's modules (nothing is copied) and is in
    eval mode; build it from a model in eval mode.

    Args:
        model (nn.Module): A ``MultiModalReID`` with a ``DMPTCLIPViT``
            backbone (``backbone``), a head with ``extract_test_feature``
            (``head``) and a data preprocessor (``data_preprocessor``).
        mean (Tensor, optional): ``(M, 3)`` or ``(3,)`` pixel means (0-255).
            Defaults to None: read from ``model.data_preprocessor``
            (:func:`preprocessor_stats`).
        std (Tensor, optional): Pixel stds, same shapes. Defaults to None
            (read with ``mean``).

    Raises:
        ConfigError: If the backbone, its tower or a block is of a kind the
            wrapper does not reproduce, or the preprocessor is not a
            per-channel normalisation.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Optional[torch.Tensor] = None,
        std: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        backbone = model.backbone
        _check_attributes(backbone, _BACKBONE_ATTRIBUTES, 'backbone')
        _check_attributes(backbone.visual, _VISUAL_ATTRIBUTES, 'visual tower')
        if not hasattr(model.head, 'extract_test_feature'):
            raise ConfigError(
                f'head {type(model.head).__name__} has no extract_test_feature(feats, mask)'
            )
        self.backbone = backbone
        self.head = model.head
        self.modalities = tuple(backbone.modalities)
        self.num_modalities = len(self.modalities)
        self.img_size = tuple(int(s) for s in backbone.img_size)
        self.feature = backbone.feature
        blocks = backbone.visual.transformer.resblocks
        for index, block in enumerate(blocks):
            _check_block(block, index)
        self.num_layers = len(blocks)
        self._msp_index = {layer: i for i, layer in enumerate(backbone.msp_layers)}
        self._sp_index = {layer: i for i, layer in enumerate(backbone.sp_layers)}
        self._bind_index = {layer: i for i, layer in enumerate(backbone.bind_layers)}
        if self._bind_index and not self._sp_index:
            raise ConfigError('bind layers without semantic prompts cannot be exported')
        if mean is None or std is None:
            mean, std = preprocessor_stats(model.data_preprocessor, self.modalities)
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 3)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 3)
        shape = (1, -1, 3, 1, 1)
        self.register_buffer('mean', mean.expand(self.num_modalities, 3).reshape(shape).clone())
        self.register_buffer('std', std.expand(self.num_modalities, 3).reshape(shape).clone())
        self.eval()

    @property
    def feature_dim(self) -> int:
        """``D`` of the ``(N, D)`` output: ``M * backbone.out_channels``."""
        return self.num_modalities * int(self.backbone.out_channels)

    def train(self, mode: bool = True) -> 'ExportableReID':
        """The wrapper is for inference only: it stays in eval mode."""
        return super().train(False)

    # ------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        """The test feature.

        Args:
            images (Tensor): ``(N, M, 3, H, W)`` float RGB in 0-255 at the
                backbone's ``img_size``.
            modality_mask (Tensor): ``(N, M)`` bool, True where present.

        Returns:
            Tensor: ``(N, M * D)``, the model's test feature (absent
            modalities' slices zero).
        """
        mask = modality_mask.to(torch.bool)
        x = (images.to(torch.float32) - self.mean) / self.std
        x = torch.where(mask[:, :, None, None, None], x, torch.zeros_like(x))
        feats = self.backbone_features(x, mask)
        return self.head.extract_test_feature(feats, mask)

    def backbone_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone's ``(N, M, D)`` features of normalised images, for any mask.

        Args:
            x (Tensor): ``(N, M, 3, H, W)`` normalised images.
            mask (Tensor): ``(N, M)`` bool.

        Returns:
            Tensor: ``(N, M, D)``; absent modalities' slices are zero.
        """
        backbone = self.backbone
        visual = backbone.visual
        num_mod = self.num_modalities
        height, width = self.img_size
        seq = self._embeds(x.reshape(-1, 3, height, width))  # (S, 1 + G, C), S = N * M
        num_base = seq.shape[1]

        msp_all = None
        if backbone.modality_prompts is not None and self._msp_index:
            knowledge = backbone.modality_knowledge[:, list(backbone.text_layer_map)]
            msp_all = backbone.modality_prompts(knowledge.to(seq.dtype))  # (L_msp, M, n, C)
        bind_keep = None
        if self._bind_index:
            num_bind = backbone.bind_prompts.num_tokens
            num_sp = backbone.semantic_prompts.num_tokens
            bind_keep = torch.cat(
                [
                    torch.ones_like(mask[:, :1]).expand(-1, num_bind),
                    mask.repeat_interleave(num_sp, dim=1),
                ],
                dim=1,
            )  # (N, n_b + M * n_sp): bind prompts and present modalities' semantic prompts

        prompts: Dict[str, torch.Tensor] = {}  # name -> (S, n, C) tokens after the base ones
        pending_bind = None  # B'_{l-1}: appended at layer l only
        last = self.num_layers - 1
        cls_only = self.feature != 'cls_prompt'
        for layer, block in enumerate(visual.transformer.resblocks):
            new: Dict[str, torch.Tensor] = {}
            if layer in self._msp_index:
                msp = msp_all[self._msp_index[layer]].to(seq.dtype)  # (M, n, C)
                # streams are sample-major: stream = sample * M + modality
                msp = msp.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
                new['msp'] = msp.reshape(-1, *msp.shape[2:])
            new_bind = None
            if layer in self._bind_index:
                new_bind = self._bind(block, self._bind_index[layer], prompts['sp'], bind_keep)
            if layer in self._sp_index:
                sp = backbone.semantic_prompts(self._sp_index[layer]).to(seq.dtype)
                new['sp'] = sp.unsqueeze(0).expand(seq.shape[0], -1, -1)
            if pending_bind is not None:
                new['bind'] = pending_bind
            prompts.pop('bind', None)  # B' lives for one layer only
            prompts.update(new)
            names = [name for name in ('msp', 'sp', 'bind') if name in prompts]
            full = torch.cat([seq] + [prompts[name] for name in names], dim=1)
            out = block_forward(block, full, None, 1 if (layer == last and cls_only) else None)
            seq = out[:, :num_base]
            start = num_base
            for name in names:
                length = prompts[name].shape[1]
                prompts[name] = out[:, start : start + length]
                start = start + length  # not +=: under tracing, start aliases a shape
            pending_bind = new_bind

        cls = visual.ln_post(seq[:, 0])
        if self.feature == 'cls':
            feats = cls
        elif self.feature == 'cls_proj':
            feats = torch.cat([cls, cls @ visual.proj], dim=-1)
        else:
            feats = torch.cat([cls, visual.ln_post(prompts['sp']).mean(1)], dim=-1)
        feats = feats.reshape(-1, num_mod, feats.shape[-1])
        return torch.where(mask[:, :, None], feats, torch.zeros_like(feats))

    def _embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token, positional embedding, ``ln_pre``: ``(B, 1 + G, C)``."""
        visual = self.backbone.visual
        x = visual.conv1(images)  # (B, C, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, G, C), row-major
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(visual.patch_dropout(x))

    def _bind(
        self, block: nn.Module, index: int, sp_prev: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """PromptIBind at one layer for every sample: ``(S, n_b, C)`` (each stream its sample's).

        ``[B_l; S^1; ...; S^M]`` through ``block`` with the absent modalities'
        semantic prompt outputs masked out of the keys; the bind outputs are
        repeated for the M streams of their sample.
        """
        num_mod = self.num_modalities
        bind = self.backbone.bind_prompts(index).to(sp_prev.dtype)  # (n_b, C)
        semantic = sp_prev.reshape(-1, num_mod * sp_prev.shape[1], sp_prev.shape[2])
        joint = torch.cat([bind.unsqueeze(0).expand(semantic.shape[0], -1, -1), semantic], dim=1)
        out = block_forward(block, joint, keep, bind.shape[0])  # (N, n_b, C)
        return out.unsqueeze(1).expand(-1, num_mod, -1, -1).reshape(-1, *out.shape[1:])
