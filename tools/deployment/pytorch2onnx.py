"""Export the test feature of a checkpoint to ONNX and check it with onnxruntime.

Usage:
    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --output-file model.onnx
        [--opset 18] [--dynamic-batch | --batch-size N] [--num-samples 8] [--atol 1e-4]
        [--data-root DIR] [--cfg-options key=value ...] [--check-only] [--debug]

The file takes ``images`` float32 ``(N, M, 3, H, W)`` (RGB, 0-255, the
config's input size; the normalisation is inside) and ``modality_mask`` bool
``(N, M)`` (False = the modality is missing), and gives ``feature``
``(N, D)``, the model's test feature. ``N`` is fixed (``--batch-size``,
default 1) or dynamic (``--dynamic-batch``). See docs/deployment.md.

The file is then checked against the PyTorch model with onnxruntime (CPU),
for every non-empty modality mask and a batch that mixes them, on random
images and on real images: the config's test set when its data exist,
otherwise a small synthetic set in the config's layout written to a
temporary folder. The max abs difference of the feature is printed per mask;
one above ``--atol`` fails the export (exit status 1; the file is left in
place for inspection). ``--check-only`` checks an existing file instead of
exporting.

A mistake (a missing config or checkpoint, an output path that cannot be
written, an unsupported ``--opset``) is printed as one message with exit
status 2; ``--debug`` shows its traceback.
"""

import argparse
import math
import os.path as osp
import sys
import tempfile
from typing import List, Optional, Sequence

from mmdmpt.utils.cli import add_debug_argument, positive_int, run_tool
from mmdmpt.utils.errors import ConfigError

#: Synthetic set for the check when the config's test data are absent: small,
#: and at least 8 test samples in every layout.
SYNTHETIC_SET = dict(num_ids=6, train_ids=3, samples_per_camera=2, family_size=3, seed=0)


def non_negative_float(text: str) -> float:
    """Parse a float option >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'expected a number >= 0, got {text!r}')
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the test feature to ONNX and check it with onnxruntime'
    )
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (full or trainable-only)')
    parser.add_argument('--output-file', required=True, help='the .onnx file to write')
    parser.add_argument(
        '--opset', type=int, default=18, help='ONNX operator set, 18-23 (default 18)'
    )
    parser.add_argument(
        '--dynamic-batch', action='store_true', help='make the batch axis N dynamic'
    )
    parser.add_argument(
        '--batch-size',
        type=positive_int,
        default=None,
        help='the fixed batch size N without --dynamic-batch (default 1)',
    )
    parser.add_argument(
        '--num-samples',
        type=positive_int,
        default=8,
        help='real images for the check (default 8; rounded down to a multiple of a fixed N)',
    )
    parser.add_argument(
        '--atol',
        type=non_negative_float,
        default=1e-4,
        help='largest accepted max abs difference to PyTorch (default 1e-4)',
    )
    parser.add_argument('--data-root', help="dataset root (the config's data_root)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        metavar='KEY=VALUE',
        help='override settings of the config, e.g. model.backbone.pretrained=...',
    )
    parser.add_argument(
        '--check-only',
        action='store_true',
        help='do not export: check the existing --output-file against the checkpoint',
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def real_image_source(cfg, args: argparse.Namespace, tmp_dir: str) -> str:
    """Point the config at images to check with; return where they come from.

    The config's test set when its data root exists; else (unless
    ``--data-root`` named a missing folder) a synthetic set in the layout of
    the config's dataset type, written under ``tmp_dir``.
    """
    from mmdmpt.engine.launch import missing_data_roots, missing_inputs_error
    from mmdmpt.engine.prepare import set_data_root

    problems = missing_data_roots(cfg, ['test_dataloader'])
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    config_root = dataset.get('data_root')
    if not problems:
        return f"the config's test set ({dataset.get('type')}, {config_root})"
    if args.data_root is not None:
        raise missing_inputs_error(problems, 'the check on real images')
    from mmdmpt.testing import LAYOUTS, make_synthetic

    layout = str(dataset.get('type', '')).lower()
    if layout not in LAYOUTS:
        raise ConfigError(
            f'the test data of the config are missing ({problems[0]}) and its dataset type '
            f'{dataset.get("type")!r} has no synthetic layout ({", ".join(LAYOUTS)}); pass '
            '--data-root with real test data.'
        )
    height, width = cfg.model.backbone.get('img_size', (256, 128))
    root = osp.join(tmp_dir, dataset['type'])
    make_synthetic(root, layout=layout, height=height, width=width, **SYNTHETIC_SET)
    set_data_root(cfg, root)
    return (
        f'a synthetic {dataset["type"]} set ({SYNTHETIC_SET["num_ids"]} ids, written to a '
        f"temporary folder; the config's test data {config_root} are absent)"
    )


def badness(row: dict) -> float:
    """A row's max abs difference, NaN counting as infinite (``max`` would skip a NaN)."""
    diff = row['max_abs_diff']
    return math.inf if math.isnan(diff) else diff


def format_rows(rows: List[dict]) -> str:
    """The parity table (Markdown)."""
    lines = [
        '| images | mask | samples | max abs diff | max abs feature |',
        '|---|---|---|---|---|',
    ]
    for row in rows:
        lines.append(
            f'| {row["source"]} | {row["mask"]} | {row["samples"]} | '
            f'{row["max_abs_diff"]:.2e} | {row["max_abs"]:.3g} |'
        )
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.dynamic_batch and args.batch_size is not None:
        raise ConfigError('--batch-size fixes the batch axis; it cannot go with --dynamic-batch')
    batch_size = args.batch_size or 1

    from mmdmpt.apis.export import check_export_target
    from mmdmpt.engine.launch import load_config_with_options
    from mmdmpt.utils.checkpoint import check_checkpoint_file
    from mmdmpt.utils.errors import DataNotFoundError

    if args.check_only:
        if not osp.isfile(args.output_file):
            raise DataNotFoundError(f'--check-only: no ONNX file at {args.output_file}')
    else:
        check_export_target(args.output_file, args.opset)
    check_checkpoint_file(args.checkpoint)  # before anything is built
    cfg = load_config_with_options(args.config, args.cfg_options, args.data_root)

    with tempfile.TemporaryDirectory(prefix='pytorch2onnx_') as tmp_dir:
        source = real_image_source(cfg, args, tmp_dir)  # before the long export
        return export_and_check(cfg, args, batch_size, source)


def export_and_check(cfg, args: argparse.Namespace, batch_size: int, source: str) -> int:
    """Build the model, export it (unless ``--check-only``), compare; the exit status."""
    import torch

    from mmdmpt.apis import build_reid_model
    from mmdmpt.apis.export import (
        check_onnx_file,
        export_onnx,
        load_test_images,
        onnx_session,
        parity_rows,
    )

    model = build_reid_model(cfg, args.checkpoint)
    if args.check_only:
        print(f'Checking {args.output_file} against {args.checkpoint}')
    else:
        info = export_onnx(
            model,
            args.output_file,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            batch_size=batch_size,
        )
        mods = len(info['modalities'])
        height, width = info['img_size']
        n = 'N' if args.dynamic_batch else str(batch_size)
        print(
            f'Exported {args.checkpoint} ({args.config}) to {args.output_file} in '
            f'{info["export_s"]:.1f} s: {info["size_mb"]:.1f} MiB, opset {info["opset"]}, '
            f'{info["nodes"]} nodes.\n'
            f'  inputs: images float32 ({n}, {mods}, 3, {height}, {width}) RGB 0-255 '
            f'({"+".join(info["modalities"])}), modality_mask bool ({n}, {mods}); '
            f'output: feature float32 ({n}, {info["feature_dim"]})'
        )

    session = onnx_session(args.output_file)
    check_onnx_file(session, model, args.output_file)
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else 1  # a fixed batch size is served in chunks
    num_mod = len(model.backbone.modalities)
    height, width = model.backbone.img_size
    gen = torch.Generator().manual_seed(0)
    num_random = step if isinstance(fixed, int) else 3
    images = torch.rand(num_random, num_mod, 3, height, width, generator=gen) * 255.0
    rows = parity_rows(model, session, images, 'random')
    real = load_test_images(cfg, max(args.num_samples, step))
    if len(real) < step:
        raise ConfigError(
            f'the test set has {len(real)} samples, fewer than the fixed batch size {step}'
        )
    rows += parity_rows(model, session, real[: len(real) // step * step], 'real')
    print(f'Real images: {source}.')
    print(
        f'Parity with PyTorch (onnxruntime CPU vs model(..., mode="tensor"), fp32; max abs '
        f'difference of the feature; tolerance {args.atol:g}):'
    )
    print(format_rows(rows))
    worst = max(rows, key=badness)
    if not worst['max_abs_diff'] <= args.atol:
        sys.stdout.flush()
        sys.stderr.write(
            f'pytorch2onnx.py: parity check failed: max abs difference '
            f'{worst["max_abs_diff"]:.3e} > {args.atol:g} ({worst["source"]} images, mask '
            f'{worst["mask"]}). {args.output_file} does not reproduce the PyTorch model; it is '
            'left in place for inspection, do not deploy it.\n'
        )
        return 1
    print(
        f'OK: every max abs difference <= {args.atol:g} (worst {worst["max_abs_diff"]:.2e}, '
        f'{worst["source"]} images, mask {worst["mask"]}).'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='pytorch2onnx.py'))
