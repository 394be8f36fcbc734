"""Test a multi-modal ReID checkpoint with MMEngine's Runner.

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--missing nir,tir | --missing all] [--show-dir DIR]
        [--cfg-options key=value ...] [--launcher pytorch]
"""

import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a multi-modal ReID model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (full or trainable-only)')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
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
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line arguments into the config."""
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint

    if args.missing is not None or args.show_dir is not None:
        test_cfg = dict(cfg.get('test_cfg') or {})
        test_cfg['type'] = 'ReIDTestLoop'
        if args.missing is not None:
            test_cfg['missing'] = args.missing
        if args.show_dir is not None:
            test_cfg['show_dir'] = args.show_dir
            test_cfg['show_num'] = args.show_num
        cfg.test_cfg = test_cfg

    if args.out is not None:
        test_cfg = dict(cfg.get('test_cfg') or {})
        test_cfg.setdefault('type', 'ReIDTestLoop')
        test_cfg['out_file'] = args.out
        cfg.test_cfg = test_cfg

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint "{args.checkpoint}" does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    cfg = merge_args(cfg, args)
    # ReIDRunner (configs/_base_/default_runtime.py) also runs distributed on
    # CPU-only machines; a config without runner_type gets MMEngine's Runner.
    if 'runner_type' in cfg:
        init_default_scope(cfg.get('default_scope', 'mmdmpt'))
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.test()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # A clean teardown: gloo ranks left to exit with a live process group
        # can abort at interpreter exit.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
