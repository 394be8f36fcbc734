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
from mmdmpt.utils.errors import ConfigError


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_output(args.out)
    from mmdmpt.utils.checkpoint import check_checkpoint_file

    check_checkpoint_file(args.checkpoint)  # before anything is read or built
    from mmdmpt.engine.launch import load_config
    from mmdmpt.models.utils.clip_export import export_open_clip

    cfg = load_config(args.config)
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    num = export_open_clip(
        backbone,
        args.checkpoint,
        args.out,
        text_from=args.text_from,
        seed=args.seed,
        config_name=args.config,
    )
    print(f'Wrote {args.out}: {num} tensors (visual tower from {args.checkpoint})')
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='reid_to_open_clip.py'))
