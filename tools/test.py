"""Test a multi-modal ReID checkpoint with MMEngine's Runner.

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--data-root DIR] [--out FILE]
        [--missing nir,tir | --missing all] [--show-dir DIR]
        [--cfg-options key=value ...] [--launcher pytorch] [--debug]

Only what testing needs is built (no training set, sampler or optimizer).
Outputs go to ``<work_dir>/test_<timestamp>/`` (``work_dir`` of the config,
or ``work_dirs/<config name>``), never over the training run's files;
``--work-dir`` puts them exactly there instead. The checkpoint file is checked
first, and its tensors must fit the model (a different ID classifier is
skipped: the metric does not use it). A mistake is printed as one message
(exit status 2); ``--debug`` shows its traceback.
"""

import argparse
import os
import os.path as osp
import time
from typing import List, Optional

from mmdmpt.utils.cli import add_debug_argument, run_tool

#: Config entries that only training reads; tools/test.py drops them.
TRAIN_ONLY = (
    'train_dataloader',
    'train_cfg',
    'optim_wrapper',
    'param_scheduler',
    'val_dataloader',
    'val_cfg',
    'val_evaluator',
    'auto_scale_lr',
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='Test a multi-modal ReID model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (full or trainable-only)')
    parser.add_argument(
        '--work-dir', help='write logs and metrics here (default: <work_dir>/test_<timestamp>)'
    )
    parser.add_argument('--data-root', help="dataset root (the config's data_root)")
    parser.add_argument('--out', help='dump the metrics to this JSON file')
    parser.add_argument(
        '--missing',
        help='comma-separated modalities to leave out at test time (e.g. "nir,tir"), or '
        '"all" to evaluate every non-empty subset of modalities and print one table',
    )
    parser.add_argument(
        '--show-dir', help='write rank-list pictures of some queries into this directory'
    )
    parser.add_argument(
        '--show-num', type=int, default=8, help='how many queries to draw with --show-dir'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. model.backbone.pretrained=None',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args: argparse.Namespace):
    """Merge the command-line arguments into the config; keep only what testing needs."""
    from mmdmpt.engine.launch import merge_cfg_options

    cfg.load_from = args.checkpoint

    if args.missing is not None:
        test_cfg = dict(cfg.get('test_cfg') or {})
        test_cfg['type'] = 'ReIDTestLoop'
        test_cfg['missing'] = args.missing
        cfg.test_cfg = test_cfg
    if args.show_dir is not None:
        hooks = cfg.get('default_hooks') or {}
        hook = dict(hooks.get('rank_list') or dict(type='RankListHook'))
        hook.update(enable=True, out_dir=args.show_dir, num_queries=args.show_num)
        hooks['rank_list'] = hook
        cfg.default_hooks = hooks

    if args.out is not None:
        test_cfg = dict(cfg.get('test_cfg') or {})
        test_cfg.setdefault('type', 'ReIDTestLoop')
        test_cfg['out_file'] = args.out
        cfg.test_cfg = test_cfg

    # Options are checked against the whole config (they may name training
    # keys, which are dropped next).
    merge_cfg_options(cfg, args.cfg_options, args.data_root)
    for name in TRAIN_ONLY:
        if name in cfg:
            cfg[name] = None
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    else:
        base = cfg.get('work_dir') or osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0]
        )
        cfg.work_dir = osp.join(base, f'test_{time.strftime("%Y%m%d_%H%M%S")}')
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from mmdmpt.utils.checkpoint import check_checkpoint_file

    check_checkpoint_file(args.checkpoint)  # before anything is read or built
    from mmdmpt.engine.launch import (
        build_runner,
        load_config,
        missing_data_roots,
        missing_inputs_error,
        remove_failed_start,
        teardown_distributed,
    )
    from mmdmpt.engine.prepare import prepare_config
    from mmdmpt.utils.checkpoint import read_checkpoint
    from mmdmpt.utils.errors import ConfigError, MMDMPTError

    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    cfg = merge_args(cfg, args)
    if not cfg.get('test_dataloader'):
        raise ConfigError(f'{args.config} has no test_dataloader: nothing to test on.')
    problems = missing_data_roots(cfg, ['test_dataloader'])
    if problems:
        raise missing_inputs_error(problems, 'testing')
    prepare_config(cfg, read_checkpoint(args.checkpoint, mmap=True))

    created = args.work_dir is None and not osp.exists(cfg.work_dir)
    runner = None
    try:
        runner = build_runner(cfg)
        runner.test()
    except MMDMPTError:
        remove_failed_start(runner, work_dir_created=created)
        raise
    teardown_distributed()
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main))
