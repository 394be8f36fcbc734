"""Train a multi-modal ReID model with MMEngine's Runner.

Usage:
    python tools/train.py configs/dmpt/dmpt_vitb_rgbnt201.py [--work-dir DIR]
        [--resume [CKPT|auto]] [--amp] [--auto-scale-lr]
        [--cfg-options key=value ...] [--launcher pytorch]
"""

import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

DATA_HELP = 'README.md, section "Data and weights preparation"'

#: ``--amp``: the mixed-precision variant of each optimizer wrapper type; the
#: non-finite loss check of the default schedules stays on under AMP.
AMP_VARIANTS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'AmpOptimWrapper': 'AmpOptimWrapper',
    'NonFiniteCheckOptimWrapper': 'AmpNonFiniteCheckOptimWrapper',
    'AmpNonFiniteCheckOptimWrapper': 'AmpNonFiniteCheckOptimWrapper',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a multi-modal ReID model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in the '
        'work dir when no path is given',
    )
    parser.add_argument(
        '--amp', action='store_true', help='mixed-precision training (needs a CUDA GPU)'
    )
    parser.add_argument(
        '--no-validate', action='store_true', help='do not evaluate during training'
    )
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='scale the LR with the total batch size'
    )
    parser.add_argument(
        '--no-pin-memory', action='store_true', help='disable pin_memory in all dataloaders'
    )
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable persistent_workers in all dataloaders',
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


def missing_inputs(cfg: Config) -> list:
    """Name the data roots and weight files the config needs but the disk lacks."""
    problems = []
    loaders = [cfg.get('train_dataloader')]
    if cfg.get('val_cfg') is not None:
        loaders.append(cfg.get('val_dataloader'))
    for loader in loaders:
        dataset = (loader or {}).get('dataset') or {}
        root = dataset.get('data_root')
        if root and not osp.isdir(root):
            problems.append(
                f'dataset {dataset.get("type")}: data_root "{root}" does not exist. '
                f'Put the dataset there in its official layout (see {DATA_HELP}), '
                'or pass --cfg-options train_dataloader.dataset.data_root=PATH '
                'val_dataloader.dataset.data_root=PATH test_dataloader.dataset.data_root=PATH.'
            )
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    pretrained = backbone.get('pretrained')
    if isinstance(pretrained, str) and not osp.isfile(pretrained):
        problems.append(
            f'model.backbone.pretrained: weight file "{pretrained}" does not exist. '
            "Copy OpenAI's released CLIP ViT-B-16.pt there (see "
            f'{DATA_HELP}), or pass --cfg-options model.backbone.pretrained=None '
            'to start from random weights.'
        )
    return list(dict.fromkeys(problems))


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line arguments into the config."""
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp and not torch.cuda.is_available():
        raise SystemExit(
            '--amp: mixed precision needs a CUDA GPU, and none is available here '
            '(torch.cuda.is_available() is False). Train on the CPU without --amp.'
        )

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if not loader:
            continue
        if args.no_pin_memory:
            loader['pin_memory'] = False
        if args.no_persistent_workers:
            loader['persistent_workers'] = False

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.no_validate:  # after --cfg-options, which may set val_dataloader keys
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.amp:  # after --cfg-options, which may set optim_wrapper.type
        use_amp(cfg)
    return cfg


def use_amp(cfg: Config) -> None:
    """Swap ``optim_wrapper.type`` for its mixed-precision variant (``--amp``).

    ``NonFiniteCheckOptimWrapper`` (the default schedules) becomes
    ``AmpNonFiniteCheckOptimWrapper``, so the non-finite loss check stays on;
    ``OptimWrapper`` becomes MMEngine's ``AmpOptimWrapper``.

    Raises:
        SystemExit: If the type has no known mixed-precision variant.
    """
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    scope, _, name = wrapper_type.rpartition('.')
    if name not in AMP_VARIANTS:
        raise SystemExit(
            f'--amp: optim_wrapper.type={wrapper_type!r} has no known mixed-precision variant; '
            f'expected one of {sorted(AMP_VARIANTS)} (or train without --amp).'
        )
    cfg.optim_wrapper.type = f'{scope}.{AMP_VARIANTS[name]}' if scope else AMP_VARIANTS[name]
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    cfg = merge_args(cfg, args)

    problems = missing_inputs(cfg)
    if problems:
        sys.stderr.write('Cannot start training, missing inputs:\n')
        for problem in problems:
            sys.stderr.write(f'  - {problem}\n')
        raise SystemExit(1)

    # ReIDRunner (configs/_base_/default_runtime.py) also runs distributed on
    # CPU-only machines; a config without runner_type gets MMEngine's Runner.
    if 'runner_type' in cfg:
        init_default_scope(cfg.get('default_scope', 'mmdmpt'))
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # A clean teardown: gloo ranks left to exit with a live process group
        # can abort at interpreter exit.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
