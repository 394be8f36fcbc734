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
"""

import argparse
import sys
from typing import Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export a visual tower as open_clip weights')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a full checkpoint of that config')
    parser.add_argument('out', help='output .safetensors file')
    parser.add_argument('--text-from', help='take the text tower from this CLIP weight file')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of a fresh text tower (default: 0)'
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    from mmengine.config import Config
    from safetensors.torch import save_file

    from mmdmpt.models.utils import build_clip, load_clip_weights, resolve_clip_config
    from mmdmpt.utils import atomic_write_path

    backbone = Config.fromfile(args.config).model.backbone
    cfg, cfg_quick_gelu, _ = resolve_clip_config(backbone.clip_model, backbone.img_size)
    quick_gelu = bool(backbone.get('quick_gelu') or cfg_quick_gelu)

    checkpoint = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
    state = checkpoint.get('state_dict', checkpoint)
    prefix = 'backbone.visual.'
    visual = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not visual:
        sys.stderr.write(
            f'{args.checkpoint} holds no "{prefix}*" weights; it must be a full checkpoint '
            f'of a model with a DMPTCLIPViT backbone (a trainable-only one lacks them).\n'
        )
        return 1

    torch.manual_seed(args.seed)
    clip = build_clip(cfg, quick_gelu)
    if args.text_from:
        text_state, _ = load_clip_weights(args.text_from)
        text_state = {k: v for k, v in text_state.items() if not k.startswith('visual.')}
        clip.load_state_dict(text_state, strict=False)
    clip.visual.load_state_dict(visual, strict=True)

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
    sys.exit(main())
