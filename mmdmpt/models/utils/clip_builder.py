"""Build an open_clip CLIP model offline and read modality knowledge from it."""

import copy
import functools
import inspect
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log

from mmdmpt.utils.errors import ConfigError

from .clip_weights import CLIPWeightsError, resize_visual_pos_embed

# Keys that ``open_clip.model.CLIP`` takes besides the tower configs.
_CLIP_KWARGS = ('init_logit_scale', 'init_logit_bias', 'nonscalar_logit_scale')


def resolve_clip_config(
    clip_model: Union[str, dict], img_size: Tuple[int, int]
) -> Tuple[dict, Optional[bool], Optional[str]]:
    """Turn a model name or dict into a CLIP config for ``img_size``.

    Args:
        clip_model (str | dict): An open_clip model name (e.g. ``'ViT-B-16'``;
            its JSON config ships with open_clip) or a dict with ``embed_dim``,
            ``vision_cfg`` and ``text_cfg`` (open_clip's ``CLIPVisionCfg`` /
            ``CLIPTextCfg`` fields; ``vision_cfg`` may give ``heads`` instead
            of ``head_width``) and optionally ``quick_gelu``.
        img_size (tuple[int, int]): Input ``(H, W)``; replaces the config's
            image size.

    Returns:
        tuple: ``(cfg, quick_gelu_from_config, model_name)``; ``cfg`` has
        ``embed_dim``, ``vision_cfg``, ``text_cfg`` and optional CLIP kwargs.

    Raises:
        ConfigError: For unknown names, a value that is neither a name nor a
            dict, non-ViT towers (timm, ResNet, HF text) or an image size that
            the patch size does not divide (a ``ValueError``).
    """
    import open_clip

    model_name = None
    if isinstance(clip_model, str):
        cfg = open_clip.get_model_config(clip_model)
        if cfg is None:
            raise ConfigError(
                f'Unknown open_clip model {clip_model!r} (model.backbone.clip_model). Use a '
                'name from open_clip.list_models() (e.g. "ViT-B-16") or a dict config with '
                'embed_dim, vision_cfg and text_cfg.'
            )
        model_name = clip_model
        cfg = copy.deepcopy(cfg)
    elif isinstance(clip_model, dict):
        cfg = copy.deepcopy(dict(clip_model))
    else:
        raise ConfigError(
            f'clip_model (model.backbone.clip_model) must be an open_clip model name or a dict, '
            f'got {type(clip_model).__name__} {clip_model!r}'
        )
    missing = [k for k in ('embed_dim', 'vision_cfg', 'text_cfg') if k not in cfg]
    if missing:
        raise ConfigError(
            f'the clip_model dict (model.backbone.clip_model) lacks {missing}; expected '
            'embed_dim, vision_cfg and text_cfg (open_clip model config fields)'
        )
    quick_gelu = cfg.pop('quick_gelu', None)
    vision = dict(cfg['vision_cfg'])
    text = dict(cfg['text_cfg'])
    if vision.get('timm_model_name') or isinstance(vision.get('layers', 12), (list, tuple)):
        raise ConfigError(
            'DMPT needs an open_clip VisionTransformer image tower; timm and ResNet towers '
            f'are not supported (clip_model={clip_model!r}).'
        )
    if text.get('hf_model_name'):
        raise ConfigError(f'HuggingFace text towers are not supported (clip_model={clip_model!r}).')
    for key in ('attentional_pool', 'final_ln_after_pool'):
        if vision.get(key):
            raise ConfigError(
                f'clip_model vision_cfg.{key} is not supported by DMPT; remove it or set it '
                'to False.'
            )
    if vision.get('pool_type', 'tok') != 'tok':
        raise ConfigError(
            'DMPT uses the class token: clip_model vision_cfg.pool_type must be "tok", got '
            f'{vision.get("pool_type")!r}.'
        )
    if 'heads' in vision:
        heads = int(vision.pop('heads'))
        width = int(vision.get('width', 768))
        if width % heads:
            raise ConfigError(
                f'clip_model vision_cfg: width {width} is not divisible by heads={heads}; '
                'expected heads dividing the width'
            )
        vision['head_width'] = width // heads
    patch = vision.get('patch_size', 16)
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    height, width = int(img_size[0]), int(img_size[1])
    if height % ph or width % pw:
        near = (max(ph, round(height / ph) * ph), max(pw, round(width / pw) * pw))
        raise ConfigError(
            f'img_size={tuple(img_size)} (model.backbone.img_size, (H, W)) is not divisible by '
            f'the patch size {patch} of the CLIP model: expected H a multiple of {ph} and W a '
            f'multiple of {pw}, e.g. {near} (resize the images in the pipeline to match)'
        )
    vision['image_size'] = (height, width)
    out = dict(embed_dim=int(cfg['embed_dim']), vision_cfg=vision, text_cfg=text)
    for key in _CLIP_KWARGS:
        if key in cfg:
            out[key] = cfg[key]
    return out, quick_gelu, model_name


def build_clip(cfg: dict, quick_gelu: bool) -> torch.nn.Module:
    """Build ``open_clip.model.CLIP`` (fp32, random init) from a resolved config.

    Args:
        cfg (dict): From :func:`resolve_clip_config`.
        quick_gelu (bool): Use QuickGELU in every MLP (OpenAI weights).

    Returns:
        nn.Module: The CLIP model in eval mode.
    """
    from open_clip.model import CLIP

    kwargs = {k: v for k, v in cfg.items() if k in inspect.signature(CLIP).parameters}
    return CLIP(**kwargs, quick_gelu=quick_gelu).eval()


def load_into_clip(
    clip: torch.nn.Module, state_dict: Dict[str, torch.Tensor], path: str = '<state dict>'
) -> None:
    """Load CLIP weights, resizing the visual positional embedding first.

    ``logit_scale`` / ``logit_bias`` may be absent (unused here); any other
    missing or unexpected key, or a shape mismatch, is an error.

    Args:
        clip (nn.Module): An ``open_clip.model.CLIP``.
        state_dict (dict): fp32 weights with open_clip key names.
        path (str): The file name for messages. Defaults to ``'<state dict>'``.

    Raises:
        CLIPWeightsError: If the weights do not fit the model.
    """
    state_dict = dict(state_dict)
    key = 'visual.positional_embedding'
    if key in state_dict:
        state_dict[key] = resize_visual_pos_embed(state_dict[key], clip.visual.grid_size)
    own = clip.state_dict()
    missing = [k for k in own if k not in state_dict and k not in ('logit_scale', 'logit_bias')]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys (e.g. {missing[:5]})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys (e.g. {unexpected[:5]})')
        if mismatched:
            parts.append(f'{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})')
        raise CLIPWeightsError(
            f'The weights in {path} do not fit the CLIP model that was built: '
            + '; '.join(parts)
            + '. Check that clip_model names the architecture of the file.'
        )
    clip.load_state_dict(state_dict, strict=False)


@functools.lru_cache(maxsize=1)
def _get_tokenizer():
    """open_clip's BPE tokenizer (its vocabulary ships with the package)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def _find_word_positions(
    tokenizer, template: str, word: str, object_name: str, context_length: int
) -> Tuple[List[int], List[int]]:
    """Token ids of the filled template and the positions of ``word``'s tokens.

    Positions count the start-of-text token, i.e. they index the tokenised
    sequence fed to the text encoder.
    """
    text = template.format(modality=word, object=object_name)
    ids = tokenizer.encode(text)
    word_ids = tokenizer.encode(word)
    prefix = template[: template.index('{modality}')].format(object=object_name)
    start = len(tokenizer.encode(prefix))
    if ids[start : start + len(word_ids)] != word_ids:
        # Fall back to the first occurrence of the word's token sequence.
        start = next(
            (
                i
                for i in range(len(ids) - len(word_ids) + 1)
                if ids[i : i + len(word_ids)] == word_ids
            ),
            -1,
        )
        if start < 0:
            raise ConfigError(
                f'Could not locate {word!r} in the tokenised prompt {text!r}; check the '
                'prompt template and the modality words'
            )
    full = [tokenizer.sot_token_id, *ids, tokenizer.eot_token_id]
    if len(full) > context_length:
        raise ConfigError(
            f'Prompt {text!r} is longer than the context length {context_length} of the text '
            'tower; use a shorter prompt template'
        )
    positions = list(range(1 + start, 1 + start + len(word_ids)))
    return full, positions


@torch.no_grad()
def extract_modality_knowledge(
    clip: torch.nn.Module,
    words: Sequence[str],
    template: str,
    object_name: str,
) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Run the frozen text encoder on one prompt per modality.

    For modality ``m`` the prompt is ``template.format(modality=words[m],
    object=object_name)``, e.g. "a near-infrared photo of a person.". For
    every text layer the hidden state (block output) at the modality word is
    kept, averaged over the word's BPE sub-tokens.

    Args:
        clip (nn.Module): ``open_clip.model.CLIP`` with its text tower.
        words (Sequence[str]): One modality word per modality.
        template (str): Must contain ``{modality}``; may contain ``{object}``.
        object_name (str): E.g. ``'person'`` or ``'vehicle'``.

    Returns:
        tuple: ``knowledge`` ``(M, L_t, d_t)``, ``text_features`` ``(M, E)``
        (the projected sentence embedding, unnormalised, as CLIP's
        ``encode_text`` gives it) and the prompts used.
    """
    from open_clip.transformer import text_global_pool

    if '{modality}' not in template:
        raise ConfigError(f'template must contain "{{modality}}", got {template!r}')
    tokenizer = _get_tokenizer()
    context_length = int(clip.context_length)
    vocab_size = int(clip.vocab_size)
    if vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f'The text tower has vocab_size={vocab_size} but the CLIP tokenizer needs '
            f'{tokenizer.vocab_size}; use vocab_size=49408 in text_cfg.'
        )
    device = clip.token_embedding.weight.device
    tokens = torch.zeros(len(words), context_length, dtype=torch.long)
    positions, prompts = [], []
    for i, word in enumerate(words):
        ids, pos = _find_word_positions(tokenizer, template, word, object_name, context_length)
        tokens[i, : len(ids)] = torch.tensor(ids)
        positions.append(pos)
        prompts.append(template.format(modality=word, object=object_name))
    tokens = tokens.to(device)

    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding.to(cast_dtype)
    per_layer = []
    for block in clip.transformer.resblocks:
        x = block(x, attn_mask=clip.attn_mask)
        per_layer.append(
            torch.stack([x[i, pos].float().mean(0) for i, pos in enumerate(positions)])
        )
    knowledge = torch.stack(per_layer, dim=1)  # (M, L_t, d_t)
    pooled = text_global_pool(
        clip.ln_final(x), tokens, clip.text_pool_type, eos_token_id=clip.text_eos_id
    )
    proj = clip.text_projection
    if proj is None:
        text_features = pooled
    elif isinstance(proj, torch.nn.Linear):
        text_features = proj(pooled)
    else:
        text_features = pooled @ proj
    print_log(
        f'Modality knowledge from {len(per_layer)} text layers for prompts {prompts}',
        logger='current',
    )
    return knowledge.float(), text_features.float(), prompts


__all__ = [
    'CLIPWeightsError',
    'build_clip',
    'extract_modality_knowledge',
    'load_into_clip',
    'resolve_clip_config',
]
