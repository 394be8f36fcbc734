"""Calibrate the "same identity" distance threshold on held-out identities.

Usage:
    python tools/analysis_tools/calibrate_threshold.py CONFIG CHECKPOINT
        [--split val | --split test] [--val-fraction F] [--target-fmr 0.01]
        [--out FILE.json] [--plot FILE.png] [--data-root DIR] [--batch-size N]
        [--num-workers N] [--device cpu] [--cfg-options key=value ...] [--debug]

The features of a split of identities the model was not trained on -- by
default ``'val'``, the training ids held out with the training config's
``val_fraction`` and ``val_seed`` -- give the distances of matching pairs
(query and gallery samples of one identity, except the pairs the
evaluation's removal rule hides) and of non-matching pairs. The threshold is
the largest distance whose false match rate (non-matching pairs at or under
it) stays at or under ``--target-fmr`` (1 % by default); the true match rate
there is reported. Written: a JSON file (default
``<checkpoint folder>/calibration.json``) that ``tools/search.py
--calibration`` and ``ReIDInferencer(threshold=...)`` accept, and a ROC / DET
curve picture (default ``<json name>_roc.png``).

``--split test`` (or ``query`` ...) calibrates on another split of the
config's test dataset; test metrics are then no longer independent of the
threshold.

A mistake is printed as one message (exit status 2); ``--debug`` shows its
traceback.
"""

import argparse
import copy
import os.path as osp
import time
from typing import Optional, Sequence

from mmdmpt.utils.cli import (
    add_debug_argument,
    check_device,
    non_negative_int,
    positive_int,
    run_tool,
)
from mmdmpt.utils.errors import ConfigError


def rate(text: str) -> float:
    """Parse a rate in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f'expected a number in (0, 1), e.g. 0.01, got {text!r}')
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Calibrate the match threshold on held-out identities'
    )
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (full or trainable-only)')
    parser.add_argument(
        '--split',
        default='val',
        choices=['val', 'test', 'query', 'gallery', 'train'],
        help="split of the test dataset (default 'val': held-out training ids)",
    )
    parser.add_argument(
        '--val-fraction',
        type=rate,
        help="fraction of training ids held out (default: the training config's val_fraction)",
    )
    parser.add_argument(
        '--target-fmr', type=rate, default=0.01, help='false match rate allowed (default 0.01)'
    )
    parser.add_argument(
        '--out', help='calibration JSON (default <checkpoint dir>/calibration.json)'
    )
    parser.add_argument('--plot', help='ROC / DET picture (default <out stem>_roc.png)')
    parser.add_argument('--data-root', help="dataset root (the config's data_root)")
    parser.add_argument('--batch-size', type=positive_int, help='override the test batch size')
    parser.add_argument(
        '--num-workers', type=non_negative_int, help='override the test dataloader workers'
    )
    parser.add_argument('--device', help='e.g. cpu or cuda:0 (default: cuda when available)')
    parser.add_argument(
        '--cfg-options', nargs='+', metavar='KEY=VALUE', help='override settings of the config'
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def calibration_dataset(cfg, split: str, val_fraction: Optional[float]) -> dict:
    """The test dataset config on ``split``; for ``'val'`` the training's held-out ids."""
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not loader or not loader.get('dataset'):
        raise ConfigError('the config has no test_dataloader.dataset to calibrate on')
    dataset = copy.deepcopy(dict(loader['dataset']))
    dataset['split'] = split
    if split != 'val':
        return dataset
    train = ((cfg.get('train_dataloader') or {}).get('dataset')) or {}
    trained = train.get('val_fraction', 0.0) or 0.0
    if val_fraction is None:
        val_fraction = trained
    if not val_fraction:
        raise ConfigError(
            "split 'val' is the training ids held out of training, and this config trains on all "
            'of them (train_dataloader.dataset.val_fraction is 0): calibrate on identities the '
            'model never saw -- train with dataset.val_fraction > 0 (e.g. 0.2) and calibrate '
            'that checkpoint, or use --split test (then the test metrics are not independent '
            'of the threshold)'
        )
    if trained and abs(trained - val_fraction) > 1e-12:
        raise ConfigError(
            f"--val-fraction {val_fraction} differs from the training config's val_fraction "
            f'{trained}: the held-out ids would include trained ones; leave --val-fraction out'
        )
    dataset['val_fraction'] = val_fraction
    dataset['val_seed'] = train.get('val_seed', dataset.get('val_seed', 0))
    return dataset


def plot_roc_det(curve: dict, calibration: dict, path: str, title: str) -> str:
    """Draw the ROC (TMR against FMR) and DET (FNMR against FMR) curves with the threshold."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    floor = 0.5 * min(1.0 / calibration['num_nonmatch_pairs'], 1.0 / calibration['num_match_pairs'])
    fmr = np.clip(curve['fmr'], floor, 1.0)
    fnmr = np.clip(curve['fnmr'], floor, 1.0)
    op_fmr = max(calibration['fmr'], floor)
    fig = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(fig)
    roc, det = fig.subplots(1, 2)
    roc.plot(fmr, curve['tmr'], color='tab:blue')
    roc.set_xscale('log')
    roc.set_xlabel('false match rate (non-matching pairs judged the same)')
    roc.set_ylabel('true match rate')
    roc.set_title('ROC')
    det.plot(fmr, fnmr, color='tab:orange')
    det.set_xscale('log')
    det.set_yscale('log')
    det.set_xlabel('false match rate')
    det.set_ylabel('false non-match rate')
    det.set_title('DET')
    label = (
        f't = {calibration["threshold"]:.4f}: FMR {100 * calibration["fmr"]:.2f} %, '
        f'TMR {100 * calibration["tmr"]:.2f} %'
    )
    roc.plot([op_fmr], [calibration['tmr']], 'o', color='tab:red', label=label)
    det.plot([op_fmr], [max(1 - calibration['tmr'], floor)], 'o', color='tab:red', label=label)
    for ax in (roc, det):
        ax.axvline(calibration['target_fmr'], color='grey', ls='--', lw=0.8)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(loc='best', fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = args.out or osp.join(osp.dirname(osp.abspath(args.checkpoint)), 'calibration.json')
    if not out.lower().endswith('.json'):
        raise ConfigError(f'--out must end in .json, got {out}')
    plot = args.plot or osp.splitext(out)[0] + '_roc.png'
    for path in (out, plot):
        if osp.isdir(path):
            raise ConfigError(f'{path} is a folder; expected a file name')

    from mmdmpt.engine.launch import load_config_with_options
    from mmdmpt.utils.checkpoint import check_checkpoint_file

    check_checkpoint_file(args.checkpoint)  # before anything is built
    cfg = load_config_with_options(args.config, args.cfg_options, args.data_root)
    dataset_cfg = calibration_dataset(cfg, args.split, args.val_fraction)
    check_device(args.device)

    from mmengine.registry import DefaultScope

    from mmdmpt.apis import (
        ReIDInferencer,
        calibrate_on_features,
        evaluator_options,
        extract_dataset_features,
        file_digest,
    )
    from mmdmpt.evaluation.functional import save_calibration
    from mmdmpt.registry import DATASETS

    inferencer = ReIDInferencer(cfg, args.checkpoint, device=args.device)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmdmpt'):
        dataset = DATASETS.build(dataset_cfg)
    features = extract_dataset_features(
        inferencer,
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    options = evaluator_options(cfg)
    meta = dataset.metainfo
    calibration, curve = calibrate_on_features(
        features,
        target_fmr=args.target_fmr,
        metric=options['metric'],
        feat_norm=options['feat_norm'],
        removal_rule=meta.get('removal_rule'),
    )
    calibration.update(
        split=args.split,
        val_fraction=dataset_cfg.get('val_fraction'),
        dataset=meta.get('dataset_name', ''),
        modalities=list(meta.get('modalities', ())),
        config=args.config,
        checkpoint=args.checkpoint,
        checkpoint_sha256=file_digest(args.checkpoint),
        created=time.strftime('%Y-%m-%d %H:%M:%S'),
    )
    save_calibration(calibration, out)
    title = (
        f'{calibration["dataset"]} split {args.split!r}: {calibration["num_match_pairs"]} '
        f'matching / {calibration["num_nonmatch_pairs"]} non-matching pairs, '
        f'{calibration["num_ids"]} ids ({calibration["metric"]} distance)'
    )
    plot_roc_det(curve, calibration, plot, title)
    print(
        f'Calibrated on split {args.split!r} of {calibration["dataset"]}: '
        f'{calibration["num_ids"]} ids, {calibration["num_queries"]} queries x '
        f'{calibration["num_gallery"]} gallery samples -> {calibration["num_match_pairs"]} '
        f'matching and {calibration["num_nonmatch_pairs"]} non-matching pairs (left out: '
        f'{calibration["removal_rule_words"]})'
    )
    print(
        f'Target false match rate {100 * args.target_fmr:.2f} %: threshold '
        f'{calibration["threshold"]:.4f} ({calibration["metric"]} distance) -> FMR '
        f'{100 * calibration["fmr"]:.2f} %, TMR {100 * calibration["tmr"]:.2f} %'
    )
    if args.target_fmr < calibration['fmr_resolution']:
        print(
            f'Note: {calibration["num_nonmatch_pairs"]} non-matching pairs resolve FMR steps of '
            f'{100 * calibration["fmr_resolution"]:.2f} % only; the threshold keeps them all out. '
            'Calibrate on more held-out ids for a tighter estimate.'
        )
    print(f'Wrote {out} and {plot}')
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='calibrate_threshold.py'))
