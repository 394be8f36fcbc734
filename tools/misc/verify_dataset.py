"""Check a config's datasets before training: list every split, decode every image.

Usage:
    python tools/misc/verify_dataset.py CONFIG [--splits train,val,test]
        [--num-workers N] [--no-progress] [--cfg-options key=value ...] [--debug]

The datasets of the config's ``train_dataloader``, ``val_dataloader`` and
``test_dataloader`` (those present, or those named by ``--splits``) are listed
and every image file is decoded once, in parallel, with the decoder of the
training pipeline (see :func:`mmdmpt.datasets.verify.verify_dataset`). A table
per split and every problem (listing errors, bad files with the reason) are
printed at once. Exit status: 0 when everything loads, 2 when anything is bad
or on a user error (a missing config file, an unknown split, ...).
"""

import argparse
import sys
from typing import Dict, List, Optional, Sequence

from mmdmpt.utils.cli import add_debug_argument, positive_int, run_tool
from mmdmpt.utils.errors import ConfigError

#: ``--splits`` name -> config key of the dataloader.
LOADERS = {'train': 'train_dataloader', 'val': 'val_dataloader', 'test': 'test_dataloader'}


def split_list(text: str) -> List[str]:
    """Parse ``--splits``: comma-separated names among ``train``, ``val``, ``test``."""
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in LOADERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f'expected comma-separated names among {", ".join(LOADERS)}, got {text!r}'
        )
    return list(dict.fromkeys(names))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Decode every image of the datasets of a config and list all bad files'
    )
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--splits',
        type=split_list,
        default=None,
        help='dataloaders to check, comma-separated among train,val,test '
        '(default: every one the config has)',
    )
    parser.add_argument(
        '--num-workers',
        type=positive_int,
        default=None,
        help='decoding threads (default: twice the usable CPU cores, at most 16)',
    )
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    parser.add_argument('--data-root', help="dataset root for every split (the config's data_root)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        metavar='KEY=VALUE',
        help='override settings of the config, e.g. train_dataloader.dataset.indices=100',
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def dataset_configs(cfg, splits: Optional[List[str]]) -> Dict[str, dict]:
    """``split name -> dataset config`` of the chosen dataloaders."""
    chosen = splits or list(LOADERS)
    out = {}
    for name in chosen:
        loader = cfg.get(LOADERS[name])
        dataset = loader.get('dataset') if isinstance(loader, dict) else None
        if dataset is None:
            if splits is not None:
                raise ConfigError(
                    f'--splits {name}: the config has no {LOADERS[name]} with a dataset '
                    f'({cfg.filename})'
                )
            continue
        out[name] = dataset
    if not out:
        raise ConfigError(f'{cfg.filename}: no train/val/test dataloader with a dataset to check')
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from mmdmpt.engine.launch import load_config_with_options

    cfg = load_config_with_options(args.config, args.cfg_options, args.data_root)
    datasets = dataset_configs(cfg, args.splits)

    from mmengine.registry import init_default_scope

    from mmdmpt.datasets.verify import verify_dataset

    init_default_scope(cfg.get('default_scope', 'mmdmpt'))
    report = verify_dataset(datasets, num_workers=args.num_workers, progress=not args.no_progress)
    sys.stdout.flush()
    print(report.format(), flush=True)
    return 0 if report.ok else 2


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='verify_dataset.py'))
