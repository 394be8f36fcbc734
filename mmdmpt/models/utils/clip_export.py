"""Save the visual tower of a trained model as an open_clip CLIP weight file."""

from typing import Any, Mapping, Optional

import torch

from mmdmpt.utils.checkpoint import checkpoint_state_dict, read_checkpoint
from mmdmpt.utils.errors import CheckpointError, ConfigError
from mmdmpt.utils.io import atomic_write_path

from .clip_builder import build_clip, resolve_clip_config
from .clip_weights import load_clip_weights

__all__ = ['export_open_clip']

_PREFIX = 'backbone.visual.'


def export_open_clip(
    backbone_cfg: Mapping[str, Any],
    checkpoint: str,
    out: str,
    text_from: Optional[str] = None,
    seed: int = 0,
    config_name: str = 'the config',
) -> int:
    """Write a complete open_clip CLIP state dict (``.safetensors``) for a checkpoint.

    The visual tower comes from ``checkpoint`` (a *full* checkpoint of a model
    with a ``DMPTCLIPViT`` backbone); the text tower, which mmdmpt drops after
    reading the modality knowledge, from ``text_from`` (a CLIP weight file)
    or, without it, freshly initialised with ``seed``. The file loads anywhere
    CLIP weights do, e.g. as ``model.backbone.pretrained``.

    Args:
        backbone_cfg (Mapping): The ``model.backbone`` config the checkpoint
            was trained with (``clip_model``, ``img_size``, ``quick_gelu``).
        checkpoint (str): The checkpoint file.
        out (str): The ``.safetensors`` file to write (atomically).
        text_from (str, optional): A CLIP weight file for the text tower.
            Defaults to None.
        seed (int): Seed of a fresh text tower. Defaults to 0.
        config_name (str): Where ``backbone_cfg`` comes from, for messages.
            Defaults to ``'the config'``.

    Returns:
        int: The number of tensors written.

    Raises:
        ConfigError: If ``backbone_cfg`` is not a CLIP-architecture backbone.
        CheckpointError: If the checkpoint lacks the visual tower (e.g. it is
            trainable-only) or a tower does not fit the architecture.
    """
    from safetensors.torch import save_file

    if not isinstance(backbone_cfg, Mapping) or 'clip_model' not in backbone_cfg:
        raise ConfigError(
            f'{config_name}: model.backbone has no clip_model; expected the config of a model '
            'with a DMPTCLIPViT backbone (the one the checkpoint was trained with).'
        )
    cfg, cfg_quick_gelu, _ = resolve_clip_config(
        backbone_cfg['clip_model'], backbone_cfg.get('img_size', (256, 128))
    )
    quick_gelu = bool(backbone_cfg.get('quick_gelu') or cfg_quick_gelu)
    state = checkpoint_state_dict(read_checkpoint(checkpoint), checkpoint)
    visual = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    if not visual:
        raise CheckpointError(
            f'{checkpoint} holds no "{_PREFIX}*" weights; it must be a full checkpoint '
            'of a model with a DMPTCLIPViT backbone (a trainable-only one lacks them).'
        )
    torch.manual_seed(seed)
    clip = build_clip(cfg, quick_gelu)
    if text_from:
        text_state, _ = load_clip_weights(text_from)
        text_state = {k: v for k, v in text_state.items() if not k.startswith('visual.')}
        try:
            clip.load_state_dict(text_state, strict=False)
        except RuntimeError as exc:
            first = ' '.join(line.strip() for line in str(exc).strip().splitlines()[:2])
            raise CheckpointError(
                f'the text tower of {text_from} does not fit model.backbone.clip_model of '
                f'{config_name} ({first}); give the CLIP weight file of the same architecture.'
            ) from None
    try:
        clip.visual.load_state_dict(visual, strict=True)
    except RuntimeError as exc:
        first = ' '.join(line.strip() for line in str(exc).strip().splitlines()[:2])
        raise CheckpointError(
            f'the visual tower of {checkpoint} does not fit model.backbone.clip_model of '
            f'{config_name} ({first}); use the config the checkpoint was trained with.'
        ) from None
    tensors = {k: v.detach().contiguous().clone() for k, v in clip.state_dict().items()}
    metadata = {
        'format': 'pt',
        'source': 'mmdmpt',
        'quick_gelu': 'true' if quick_gelu else 'false',
        'converted_from': str(checkpoint),
    }
    with atomic_write_path(out) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return len(tensors)
