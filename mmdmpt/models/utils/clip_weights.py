"""Reading CLIP weight files safely, resizing positional embeddings, QuickGELU.

Three file formats are accepted:

1. OpenAI's released TorchScript archive (e.g. ``ViT-B-16.pt``, fp16). It is
   loaded with :func:`torch.jit.load` -- the one documented exception to
   ``weights_only`` loading, because the file is a TorchScript program -- and
   converted to an fp32 state dict with open_clip key names. OpenAI weights
   were trained with QuickGELU, which the archive implies.
2. A state dict saved with :func:`torch.save` (``.pt``/``.pth``/``.bin``),
   read with ``torch.load(weights_only=True)``: pickled code is never run.
   It may be nested under ``'state_dict'`` or ``'model'`` and carry
   ``'module.'`` prefixes (open_clip training checkpoints).
3. A ``.safetensors`` file. Its metadata may state the activation, e.g. our
   converter ``tools/model_converters/openai_to_safetensors.py`` writes
   ``{'source': 'openai', 'quick_gelu': 'true'}``.
"""

import math
import os
import os.path as osp
import pickle
import warnings
import zipfile
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from mmdmpt.utils.errors import CheckpointError

ACCEPTED_FORMATS = (
    "OpenAI's TorchScript archive (e.g. ViT-B-16.pt), "
    'an open_clip state dict saved with torch.save (.pt/.pth/.bin, optionally nested under '
    "'state_dict' or 'model'), or a .safetensors file"
)

# Keys that OpenAI's archive carries besides the weights (and buffers that
# TorchScript keeps in the state dict but open_clip rebuilds itself).
_OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
_NON_WEIGHT_SUFFIXES = ('attn_mask',)
# open_clip's CustomTextCLIP stores the text tower under ``text.``; the plain
# CLIP class (which we build) keeps it at the top level.
_CUSTOM_TEXT_PREFIXES = (
    'text.transformer.',
    'text.token_embedding.',
    'text.positional_embedding',
    'text.ln_final.',
    'text.text_projection',
)


class CLIPWeightsError(CheckpointError, ValueError):
    """A CLIP weight file could not be read or does not fit the model.

    A user error (:class:`~mmdmpt.utils.errors.CheckpointError`); still a
    ``ValueError``, as it was before the user-error types existed.
    """


class CLIPWeightsNotFoundError(CheckpointError, FileNotFoundError):
    """A CLIP weight file does not exist (a ``FileNotFoundError`` too)."""


def _is_torchscript_archive(path: str) -> bool:
    """Return True for a zip file that holds TorchScript code (not only data)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any('/code/' in name or name.endswith('/constants.pkl') for name in names)


def _is_safetensors(path: str) -> bool:
    """Sniff the safetensors header: 8-byte little-endian length, then JSON."""
    if path.endswith('.safetensors'):
        return True
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], 'little')
    return head[8:9] == b'{' and 0 < size < osp.getsize(path)


def _to_fp32(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        value = value.detach()
        if value.is_floating_point():
            value = value.float()
        out[key] = value.contiguous()
    return out


def _unwrap(obj: object, path: str) -> Tuple[Dict[str, torch.Tensor], Optional[str], bool]:
    """Find the tensor dict inside a loaded object.

    Returns:
        tuple: the state dict, the key it was nested under (or None), and
        whether ``'module.'`` prefixes were stripped.
    """
    nested = None
    if isinstance(obj, dict):
        for key in ('state_dict', 'model'):
            if key in obj and isinstance(obj[key], dict):
                obj, nested = obj[key], key
                break
    if not isinstance(obj, dict) or not obj:
        raise CLIPWeightsError(
            f'{path} holds no state dict (found {type(obj).__name__}). '
            f'Accepted: {ACCEPTED_FORMATS}.'
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CLIPWeightsError(f'{path} holds no tensors. Accepted: {ACCEPTED_FORMATS}.')
    stripped = False
    if all(k.startswith('module.') for k in tensors):
        tensors = {k[len('module.') :]: v for k, v in tensors.items()}
        stripped = True
    return tensors, nested, stripped


def _normalise_keys(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], bool]:
    """Drop non-weight entries and map CustomTextCLIP keys to plain CLIP keys.

    Returns:
        tuple: the cleaned state dict and whether OpenAI's extra keys
        (``input_resolution``/``context_length``/``vocab_size``) were present.
    """
    had_openai_extras = any(k in state_dict for k in _OPENAI_EXTRA_KEYS)
    out = {}
    for key, value in state_dict.items():
        if key in _OPENAI_EXTRA_KEYS or key.endswith(_NON_WEIGHT_SUFFIXES):
            continue
        if key.startswith(_CUSTOM_TEXT_PREFIXES):
            key = key[len('text.') :]
        out[key] = value
    return out, had_openai_extras


def is_openai_layout(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether the keys follow OpenAI's CLIP ViT layout exactly.

    That is: a ViT image tower with ``visual.proj``, a plain ``text_projection``
    matrix, no timm / HF towers, no ``logit_bias`` (SigLIP) and no key outside
    OpenAI's name set. open_clip checkpoints trained from scratch (e.g. LAION)
    have the same layout, so this alone does not prove OpenAI origin.
    """
    keys = set(state_dict)
    allowed_top = (
        'visual.',
        'transformer.',
        'token_embedding.',
        'positional_embedding',
        'text_projection',
        'ln_final.',
        'logit_scale',
    )
    if 'visual.proj' not in keys or 'text_projection' not in keys:
        return False
    if any(k.startswith(('visual.trunk.', 'visual.attnpool.', 'text.')) for k in keys):
        return False
    if 'logit_bias' in keys or state_dict['text_projection'].dim() != 2:
        return False
    return all(k.startswith(allowed_top) for k in keys)


def load_clip_weights(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Load a CLIP checkpoint as an fp32 state dict with open_clip key names.

    Args:
        path (str): The weight file: OpenAI's TorchScript archive, a
            ``torch.save`` state dict (``.pt``/``.pth``/``.bin``) or a
            ``.safetensors`` file.

    Returns:
        tuple[dict, dict]: The state dict (fp32, contiguous, no ``module.``
        prefix, without OpenAI's non-weight entries) and an ``info`` dict with
        ``path``, ``format`` (``'torchscript'``, ``'state_dict'`` or
        ``'safetensors'``), ``source`` (``'openai'`` or ``None`` when
        unknown), ``quick_gelu`` (``True``/``False`` when the file says so,
        ``None`` when it does not), ``quick_gelu_reason``, ``nested``
        (the key the dict was nested under, or ``None``),
        ``training_checkpoint`` (nested with ``module.`` prefixes, i.e. saved by
        a training script) and ``openai_layout`` (see :func:`is_openai_layout`).

    Raises:
        CLIPWeightsNotFoundError: If ``path`` does not exist (a
            ``FileNotFoundError``).
        CLIPWeightsError: If the file is corrupt, holds pickled code or no
            tensors (the message names the file and the accepted formats).
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise CLIPWeightsNotFoundError(
            f'CLIP weight file not found: {path}. Accepted formats: {ACCEPTED_FORMATS}. '
            'Weights are never downloaded; put the file there (e.g. OpenAI ViT-B-16.pt in '
            'checkpoints/) or set pretrained=None for random weights.'
        )
    info = dict(
        path=path,
        format=None,
        source=None,
        quick_gelu=None,
        quick_gelu_reason=None,
        nested=None,
        training_checkpoint=False,
        openai_layout=False,
    )

    if _is_torchscript_archive(path):
        info['format'] = 'torchscript'
        try:
            # The documented exception to weights_only: OpenAI's release is a
            # TorchScript program; only its tensors are kept.
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', FutureWarning)  # jit deprecation notice
                archive = torch.jit.load(path, map_location='cpu')
            raw = dict(archive.state_dict())
        except Exception as exc:  # re-raised with context
            raise CLIPWeightsError(
                f'{path} looks like a TorchScript archive but could not be loaded ({exc}). '
                f'Accepted: {ACCEPTED_FORMATS}.'
            ) from exc
        state_dict, _ = _normalise_keys(_to_fp32(raw))
        info.update(
            source='openai',
            quick_gelu=True,
            quick_gelu_reason="OpenAI's TorchScript archive (trained with QuickGELU)",
        )
    elif _is_safetensors(path):
        info['format'] = 'safetensors'
        try:
            from safetensors import safe_open
            from safetensors.torch import load_file

            raw = load_file(path, device='cpu')
            with safe_open(path, framework='pt', device='cpu') as f:
                metadata = f.metadata() or {}
        except Exception as exc:  # re-raised with context
            raise CLIPWeightsError(
                f'{path} is not a readable .safetensors file ({exc}). Accepted: {ACCEPTED_FORMATS}.'
            ) from exc
        info['metadata'] = dict(metadata)
        raw, nested, stripped = _unwrap(raw, path)
        state_dict, had_extras = _normalise_keys(_to_fp32(raw))
        source = metadata.get('source')
        if source:
            info['source'] = source
        flag = metadata.get('quick_gelu')
        if flag is not None:
            info['quick_gelu'] = str(flag).strip().lower() in ('1', 'true', 'yes')
            info['quick_gelu_reason'] = f'file metadata quick_gelu={flag!r}'
        elif source == 'openai' or had_extras:
            info.update(
                source='openai',
                quick_gelu=True,
                quick_gelu_reason="file metadata source='openai'"
                if source == 'openai'
                else 'OpenAI archive keys (input_resolution/context_length/vocab_size) present',
            )
    else:
        info['format'] = 'state_dict'
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CLIPWeightsError(
                f'Refused to load {path}: it is not a plain tensor file (torch.load with '
                f'weights_only=True rejected it: {str(exc).splitlines()[0]}). Pickled code is '
                f'never executed. Accepted: {ACCEPTED_FORMATS}.'
            ) from exc
        except Exception as exc:  # corrupt file, bad zip, ...
            raise CLIPWeightsError(
                f'Could not read {path} as CLIP weights ({type(exc).__name__}: '
                f'{str(exc).splitlines()[0] if str(exc) else ""}). Accepted: {ACCEPTED_FORMATS}.'
            ) from exc
        raw, nested, stripped = _unwrap(obj, path)
        state_dict, had_extras = _normalise_keys(_to_fp32(raw))
        info['nested'] = nested
        info['training_checkpoint'] = bool(nested == 'state_dict' and stripped)
        if had_extras:
            info.update(
                source='openai',
                quick_gelu=True,
                quick_gelu_reason=(
                    'OpenAI archive keys (input_resolution/context_length/vocab_size) present'
                ),
            )
    info['openai_layout'] = is_openai_layout(state_dict)
    return state_dict, info


def resolve_quick_gelu(
    explicit: Optional[bool],
    info: Optional[dict],
    config_quick_gelu: Optional[bool] = None,
    model_name: Optional[str] = None,
) -> Tuple[bool, str]:
    """Choose the MLP activation (QuickGELU or GELU) for CLIP weights.

    The rule, first match wins:

    1. ``explicit`` (the backbone's ``quick_gelu`` argument) when not None.
    2. What the file states: OpenAI's TorchScript archive -> QuickGELU;
       ``.safetensors`` metadata ``quick_gelu`` (or ``source='openai'``);
       a state dict still carrying OpenAI's ``input_resolution`` /
       ``context_length`` / ``vocab_size`` entries -> QuickGELU.
    3. The model config's own ``quick_gelu`` (open_clip ``*-quickgelu`` names,
       or ``quick_gelu`` in a dict config).
    4. A plain state dict whose keys follow OpenAI's layout exactly
       (:func:`is_openai_layout`), that is not an open_clip *training*
       checkpoint (nested under ``'state_dict'`` with ``module.`` prefixes),
       for an open_clip model name that has an ``'openai'`` pretrained tag
       -> QuickGELU (the likely case in this project: OpenAI weights re-saved
       as a state dict). A warning says how to override it.
    5. Otherwise GELU (open_clip's default).

    Args:
        explicit (bool, optional): User choice. Defaults to None (auto).
        info (dict, optional): ``info`` from :func:`load_clip_weights`, or
            None when no weights are loaded.
        config_quick_gelu (bool, optional): ``quick_gelu`` of the model config.
            Defaults to None.
        model_name (str, optional): The open_clip model name, if any.
            Defaults to None.

    Returns:
        tuple[bool, str]: Whether to use QuickGELU, and the reason.
    """
    if explicit is not None:
        return bool(explicit), f'quick_gelu={bool(explicit)} set explicitly'
    if info is not None and info.get('quick_gelu') is not None:
        return bool(info['quick_gelu']), str(info['quick_gelu_reason'])
    if config_quick_gelu is not None:
        return bool(config_quick_gelu), f'model config sets quick_gelu={bool(config_quick_gelu)}'
    if (
        info is not None
        and info.get('format') == 'state_dict'
        and info.get('openai_layout')
        and not info.get('training_checkpoint')
        and model_name is not None
        and _has_openai_tag(model_name)
    ):
        return True, (
            f'plain state dict without metadata in OpenAI key layout for {model_name!r} '
            "(which has an 'openai' pretrained tag): assumed OpenAI weights; pass "
            'quick_gelu=False if they were trained with GELU (e.g. LAION weights)'
        )
    if info is None:
        return False, 'no pretrained weights: open_clip default GELU'
    return False, 'nothing in the file or config asks for QuickGELU: open_clip default GELU'


def _has_openai_tag(model_name: str) -> bool:
    try:
        import open_clip

        return 'openai' in open_clip.list_pretrained_tags_by_model(model_name)
    except Exception:  # unknown names simply have no tag
        return False


def resize_visual_pos_embed(
    pos_embed: torch.Tensor, grid_size: Tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resize a ViT positional embedding to a new patch grid (bicubic).

    The class token's embedding is kept; the patch embeddings are treated as
    a square image and interpolated (bicubic, antialiased, as open_clip does)
    in fp32 (fp16 bicubic is unavailable on the CPU).

    Args:
        pos_embed (Tensor): ``(num_prefix_tokens + Gh * Gw, C)``.
        grid_size (tuple[int, int]): Target grid ``(H / patch, W / patch)``.
        num_prefix_tokens (int): Leading tokens kept as they are. Defaults to 1.

    Returns:
        Tensor: ``(num_prefix_tokens + grid_size[0] * grid_size[1], C)``, in
        the input's dtype.

    Raises:
        CLIPWeightsError: If the source grid is not square while it differs
            from the target (its shape cannot be inferred).
    """
    gh, gw = int(grid_size[0]), int(grid_size[1])
    target_len = num_prefix_tokens + gh * gw
    if pos_embed.shape[0] == target_len:
        return pos_embed
    prefix, patches = pos_embed[:num_prefix_tokens], pos_embed[num_prefix_tokens:]
    side = math.isqrt(patches.shape[0])
    if side * side != patches.shape[0]:
        raise CLIPWeightsError(
            f'Cannot resize the positional embedding: the checkpoint has {patches.shape[0]} patch '
            f'positions, which is not a square grid, and the model needs a {gh}x{gw} grid '
            f'({gh * gw} positions). Build the model with the image size the checkpoint was '
            'trained at, or use a checkpoint with a square grid.'
        )
    dtype = pos_embed.dtype
    grid = patches.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode='bicubic', antialias=True, align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)
    return torch.cat([prefix.float(), patches], dim=0).to(dtype)
