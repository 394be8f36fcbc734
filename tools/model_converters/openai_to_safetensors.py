"""Convert OpenAI's released CLIP archive into a .safetensors file.

The output holds open_clip key names and the metadata
``{'source': 'openai', 'quick_gelu': 'true', ...}`` so that
``DMPTCLIPViT(pretrained=<file>)`` picks QuickGELU by itself and the file is
read without unpickling anything. The file is written atomically (temporary
file in the same folder, then rename).

Example::

    python tools/model_converters/openai_to_safetensors.py \
        checkpoints/ViT-B-16.pt checkpoints/ViT-B-16-openai.safetensors
"""

import argparse
import os.path as osp
import sys
from typing import Optional, Sequence


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
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    from safetensors.torch import save_file

    from mmdmpt.models.utils import load_clip_weights
    from mmdmpt.utils import atomic_write_path

    state_dict, info = load_clip_weights(args.src)
    if info['source'] != 'openai' and not args.allow_non_openai:
        sys.stderr.write(
            f'{args.src} is not an OpenAI CLIP archive (format {info["format"]}); '
            'pass --allow-non-openai to convert it anyway.\n'
        )
        return 1
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
    sys.exit(main())
