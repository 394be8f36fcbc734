"""Write the test features of a checkpoint (query and gallery) to a file.

Usage:
    python tools/analysis_tools/extract_features.py CONFIG CHECKPOINT --out FILE
        [--missing nir,tir] [--no-normalize] [--batch-size N] [--num-workers N]
        [--device cpu] [--data-root DIR] [--cfg-options key=value ...] [--debug]

FILE ends in ``.pt`` (``torch.save`` of tensors, strings and lists only: it
loads with ``torch.load(weights_only=True)``) or ``.npz``. It holds the
features of every sample of ``test_dataloader`` (query then gallery for the
``'test'`` split) with ``pids``, ``camids``, ``sceneids`` (-1 when none),
``is_query``, ``sample_idx``, ``modality_mask``, ``img_paths`` and
``modalities`` (see ``mmdmpt/structures/reid_features.py``); read it back with
``mmdmpt.apis.load_features``. For a trainable-only checkpoint,
``model.backbone.pretrained`` must point to the CLIP file used in training.

The output path, the checkpoint file and the config are checked before the
model is built; a mistake is printed as one message with exit status 2
(``--debug`` shows its traceback).
"""

import argparse
from typing import Optional, Sequence

from mmdmpt.utils.cli import (
    add_debug_argument,
    check_device,
    non_negative_int,
    positive_int,
    run_tool,
)
from mmdmpt.utils.errors import ConfigError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Extract query and gallery features')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (full or trainable-only)')
    parser.add_argument('--out', required=True, help='output file (.pt or .npz)')
    parser.add_argument(
        '--missing', help='comma-separated modalities to leave out (e.g. "nir,tir")'
    )
    parser.add_argument(
        '--no-normalize', action='store_true', help='keep the features as the model gives them'
    )
    parser.add_argument('--batch-size', type=positive_int, help='override the test batch size')
    parser.add_argument(
        '--num-workers', type=non_negative_int, help='override the test dataloader workers'
    )
    parser.add_argument('--device', help='e.g. cpu or cuda:0 (default: cuda when available)')
    parser.add_argument('--data-root', help="dataset root (the config's data_root)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        metavar='KEY=VALUE',
        help='override settings of the config, e.g. model.backbone.pretrained=...',
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not args.out.lower().endswith(('.pt', '.pth', '.npz')):
        raise ConfigError(f'--out must end in .pt or .npz, got {args.out}')

    from mmdmpt.engine.config_check import check_sections
    from mmdmpt.engine.launch import (
        load_config_with_options,
        missing_data_roots,
        missing_inputs_error,
    )
    from mmdmpt.structures import check_feature_path
    from mmdmpt.utils.checkpoint import check_checkpoint_file

    check_feature_path(args.out)
    check_checkpoint_file(args.checkpoint)  # before anything is built
    cfg = load_config_with_options(args.config, args.cfg_options, args.data_root)
    if not cfg.get('test_dataloader'):
        raise ConfigError(f'{args.config} has no test_dataloader: no samples to extract.')
    check_sections(cfg)
    problems = missing_data_roots(cfg, ['test_dataloader'])
    if problems:
        raise missing_inputs_error(problems, 'feature extraction')
    check_device(args.device)

    from mmdmpt.apis import ReIDInferencer, extract_dataset_features, save_features

    inferencer = ReIDInferencer(cfg, args.checkpoint, device=args.device)
    features = extract_dataset_features(
        inferencer,
        missing=args.missing,
        normalize=not args.no_normalize,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    save_features(features, args.out)
    num_query = int(features['is_query'].sum())
    num = len(features['pids'])
    print(
        f'Wrote {num} features of dim {features["feats"].shape[1]} ({num_query} query, '
        f'{num - num_query} gallery; modalities {"+".join(features["modalities"])}'
        f'{", missing " + ",".join(features["missing"]) if features["missing"] else ""}) '
        f'to {args.out}'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='extract_features.py'))
