"""Convert OpenAI's released CLIP archive into a .safetensors file.

The output holds open_clip key names and the metadata
``{'source': 'openai', 'quick_gelu': 'true', ...}`` so that
``DMPTCLIPViT(pretrained=<file>)`` picks QuickGELU by itself and the file is
read without unpickling anything. The file is written atomically (temporary
file in the same folder, then rename).

Example::

    python tools/model_converters/openai_to_safetensors.py \
        checkpoints/ViT-B-16.pt checkpoints/ViT-B-16-openai.safetensors

A mistake (a missing or unreadable source, a source that is not an OpenAI
archive without ``--allow-non-openai``, an output path that is a folder) is
printed as one message with exit status 2; ``--debug`` shows its traceback.
"""

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmdmpt.utils.cli import add_debug_argument, run_tool
from mmdmpt.utils.errors import CheckpointError, ConfigError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert OpenAI's CLIP TorchScript archive to .safetensors"
    )
    parser.add_argument('src', help="OpenAI's archive (e.g. ViT-B-16.pt)")
    parser.add_argument('dst', help='output .safetensors file')
    parser.add_argument(
        '--dtype',
        choices=('fp32', 'fp16'),
        default='fp32',
        help='tensor precision in the output (default: fp32)',
    )
    parser.add_argument(
        '--allow-non-openai',
        action='store_true',
        help='also convert files that are not OpenAI archives (metadata then says so)',
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def check_output(path: str, src: str) -> None:
    """Refuse an output path that is a folder, lies under a file, or is the source."""
    if osp.isdir(path):
        raise ConfigError(
            f'output {path} is a folder; expected a file name, e.g. ViT-B-16.safetensors'
        )
    folder = osp.dirname(osp.abspath(path))
    while folder and not osp.exists(folder):
        folder = osp.dirname(folder)
    if folder and not osp.isdir(folder):
        raise ConfigError(f'output {path}: {folder} is a file, not a folder; choose another path')
    if osp.exists(src) and osp.abspath(path) == osp.abspath(src):
        raise ConfigError(f'output {path} is the source file; choose another name')


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_output(args.dst, args.src)
    import torch
    from safetensors.torch import save_file

    from mmdmpt.models.utils import load_clip_weights
    from mmdmpt.utils import atomic_write_path

    state_dict, info = load_clip_weights(args.src)
    if info['source'] != 'openai' and not args.allow_non_openai:
        raise CheckpointError(
            f'{args.src} is not an OpenAI CLIP archive (format {info["format"]}); '
            'pass --allow-non-openai to convert it anyway.'
        )
    dtype = torch.float16 if args.dtype == 'fp16' else torch.float32
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous().clone()
        for k, v in state_dict.items()
    }
    quick_gelu = info['quick_gelu'] if info['quick_gelu'] is not None else False
    metadata = {
        'format': 'pt',
        'source': info['source'] or 'unknown',
        'quick_gelu': 'true' if quick_gelu else 'false',
        'dtype': args.dtype,
        'converted_from': osp.basename(args.src),
    }
    with atomic_write_path(args.dst) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    num = sum(v.numel() for v in tensors.values())
    print(f'Wrote {args.dst}: {len(tensors)} tensors, {num:,} values, {args.dtype}, {metadata}')
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='openai_to_safetensors.py'))
