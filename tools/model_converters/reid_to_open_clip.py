"""Export the visual tower of a trained mmdmpt model as an open_clip state dict.

The output is a complete ``open_clip.model.CLIP`` state dict in ``.safetensors``
format: the visual tower comes from the checkpoint, the text tower (which
mmdmpt drops after reading the modality knowledge) is taken from
``--text-from`` (a CLIP weight file) or, without it, freshly initialised with
``--seed``. The file loads anywhere CLIP weights do, e.g. as
``model.backbone.pretrained`` of a DMPT config. This is how ``make demo`` turns
its RGB-only stand-in pretraining into the "pretrained CLIP" that DMPT freezes.

Example::

    python tools/model_converters/reid_to_open_clip.py \
        configs/demo/standin_vit-tiny_rgb-pretrain.py work_dirs/standin/epoch_20.pth \
        checkpoints/demo/standin_vit-tiny_rgb.safetensors

A mistake (a missing config or checkpoint, a checkpoint without the visual
tower or of another architecture, an output path that is a folder) is printed
as one message with exit status 2; ``--debug`` shows its traceback.
"""

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmdmpt.utils.cli import add_debug_argument, run_tool
from mmdmpt.utils.errors import CheckpointError, ConfigError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export a visual tower as open_clip weights')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a full checkpoint of that config')
    parser.add_argument('out', help='output .safetensors file')
    parser.add_argument('--text-from', help='take the text tower from this CLIP weight file')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of a fresh text tower (default: 0)'
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def check_output(path: str) -> None:
    """Refuse an output path that is a folder or lies under a file."""
    if osp.isdir(path):
        raise ConfigError(
            f'output {path} is a folder; expected a file name, e.g. model.safetensors'
        )
    folder = osp.dirname(osp.abspath(path))
    while folder and not osp.exists(folder):
        folder = osp.dirname(folder)
    if folder and not osp.isdir(folder):
        raise ConfigError(f'output {path}: {folder} is a file, not a folder; choose another path')


def clip_backbone(cfg, path: str):
    """``cfg.model.backbone``, which must be a CLIP-architecture backbone."""
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    if not isinstance(backbone, dict) or 'clip_model' not in backbone:
        raise ConfigError(
            f'{path}: model.backbone has no clip_model; expected the config of a model with a '
            'DMPTCLIPViT backbone (the one the checkpoint was trained with).'
        )
    return backbone


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_output(args.out)
    from mmdmpt.utils.checkpoint import check_checkpoint_file

    check_checkpoint_file(args.checkpoint)  # before anything is read or built
    import torch
    from safetensors.torch import save_file

    from mmdmpt.engine.launch import load_config
    from mmdmpt.models.utils import build_clip, load_clip_weights, resolve_clip_config
    from mmdmpt.utils import atomic_write_path
    from mmdmpt.utils.checkpoint import checkpoint_state_dict, read_checkpoint

    backbone = clip_backbone(load_config(args.config), args.config)
    cfg, cfg_quick_gelu, _ = resolve_clip_config(
        backbone.clip_model, backbone.get('img_size', (256, 128))
    )
    quick_gelu = bool(backbone.get('quick_gelu') or cfg_quick_gelu)

    state = checkpoint_state_dict(read_checkpoint(args.checkpoint), args.checkpoint)
    prefix = 'backbone.visual.'
    visual = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not visual:
        raise CheckpointError(
            f'{args.checkpoint} holds no "{prefix}*" weights; it must be a full checkpoint '
            f'of a model with a DMPTCLIPViT backbone (a trainable-only one lacks them).'
        )

    torch.manual_seed(args.seed)
    clip = build_clip(cfg, quick_gelu)
    if args.text_from:
        text_state, _ = load_clip_weights(args.text_from)
        text_state = {k: v for k, v in text_state.items() if not k.startswith('visual.')}
        try:
            clip.load_state_dict(text_state, strict=False)
        except RuntimeError as exc:
            first = ' '.join(line.strip() for line in str(exc).strip().splitlines()[:2])
            raise CheckpointError(
                f'the text tower of --text-from {args.text_from} does not fit '
                f'model.backbone.clip_model of {args.config} ({first}); give the CLIP weight '
                'file of the same architecture.'
            ) from None
    try:
        clip.visual.load_state_dict(visual, strict=True)
    except RuntimeError as exc:
        first = ' '.join(line.strip() for line in str(exc).strip().splitlines()[:2])
        raise CheckpointError(
            f'the visual tower of {args.checkpoint} does not fit model.backbone.clip_model of '
            f'{args.config} ({first}); use the config the checkpoint was trained with.'
        ) from None

    tensors = {k: v.detach().contiguous().clone() for k, v in clip.state_dict().items()}
    metadata = {
        'format': 'pt',
        'source': 'mmdmpt',
        'quick_gelu': 'true' if quick_gelu else 'false',
        'converted_from': args.checkpoint,
    }
    with atomic_write_path(args.out) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    print(f'Wrote {args.out}: {len(tensors)} tensors (visual tower from {args.checkpoint})')
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='reid_to_open_clip.py'))
