"""Train a multi-modal ReID model with MMEngine's Runner.

Usage:
    python tools/train.py configs/dmpt/dmpt_vitb_rgbnt201.py [--work-dir DIR]
        [--data-root DIR] [--resume [CKPT|auto]] [--amp] [--compile] [--auto-scale-lr]
        [--check-data] [--cfg-options key=value ...] [--launcher pytorch] [--debug]

A mistake in the config, the data or a checkpoint is printed as one message
(exit status 2); ``--debug`` shows its traceback.
"""

import argparse
import os
import os.path as osp
from typing import List, Optional

from mmdmpt.utils.cli import add_debug_argument, run_tool

#: ``--amp``: the mixed-precision variant of each optimizer wrapper type; the
#: non-finite loss check of the default schedules stays on under AMP.
AMP_VARIANTS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'AmpOptimWrapper': 'AmpOptimWrapper',
    'NonFiniteCheckOptimWrapper': 'AmpNonFiniteCheckOptimWrapper',
    'AmpNonFiniteCheckOptimWrapper': 'AmpNonFiniteCheckOptimWrapper',
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a multi-modal ReID model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--data-root', help="dataset root for every split (the config's data_root)")
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
        '--compile',
        action='store_true',
        help="run the backbone's training forward through torch.compile (static shapes; "
        'model.backbone.torch_compile=True)',
    )
    parser.add_argument(
        '--no-validate', action='store_true', help='do not evaluate during training'
    )
    parser.add_argument(
        '--check-data',
        action='store_true',
        help='decode every image of every split first and list all bad files',
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
        action=_dict_action(),
        help='override settings of the config, e.g. model.backbone.pretrained=None',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _dict_action():
    from mmengine.config import DictAction

    return DictAction


def missing_inputs(cfg) -> list:
    """Name the data roots and weight files the config needs but the disk lacks."""
    from mmdmpt.engine.launch import missing_data_roots

    loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') is not None else [])
    problems = missing_data_roots(cfg, loaders)
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    pretrained = backbone.get('pretrained')
    if isinstance(pretrained, str) and not osp.isfile(pretrained):
        problems.append(
            f'model.backbone.pretrained: weight file "{pretrained}" does not exist. '
            'Copy OpenAI\'s released CLIP ViT-B-16.pt there (see README.md, section "Data and '
            'weights preparation"), or pass --cfg-options model.backbone.pretrained=None '
            'to start from random weights.'
        )
    return problems


def merge_args(cfg, args: argparse.Namespace):
    """Merge the command-line arguments into the config."""
    import torch

    from mmdmpt.engine.launch import merge_cfg_options
    from mmdmpt.utils.errors import ConfigError

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp and not torch.cuda.is_available():
        raise ConfigError(
            '--amp: mixed precision needs a CUDA GPU, and none is available here '
            '(torch.cuda.is_available() is False). Train on the CPU without --amp.'
        )

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        from mmdmpt.utils.checkpoint import check_checkpoint_file

        check_checkpoint_file(args.resume)
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

    merge_cfg_options(cfg, args.cfg_options, args.data_root)
    if args.no_validate:  # after --cfg-options, which may set val_dataloader keys
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.amp:  # after --cfg-options, which may set optim_wrapper.type
        use_amp(cfg)
    if args.compile:
        use_compile(cfg)
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and not cfg.get('resume'):
        from mmdmpt.utils.checkpoint import check_checkpoint_file

        check_checkpoint_file(load_from)
    return cfg


def use_amp(cfg) -> None:
    """Swap ``optim_wrapper.type`` for its mixed-precision variant (``--amp``).

    ``NonFiniteCheckOptimWrapper`` (the default schedules) becomes
    ``AmpNonFiniteCheckOptimWrapper``, so the non-finite loss check stays on;
    ``OptimWrapper`` becomes MMEngine's ``AmpOptimWrapper``.

    Raises:
        ConfigError: If the type has no known mixed-precision variant.
    """
    from mmdmpt.utils.errors import ConfigError

    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    scope, _, name = wrapper_type.rpartition('.')
    if name not in AMP_VARIANTS:
        raise ConfigError(
            f'--amp: optim_wrapper.type={wrapper_type!r} has no known mixed-precision variant; '
            f'expected one of {sorted(AMP_VARIANTS)} (or train without --amp).'
        )
    cfg.optim_wrapper.type = f'{scope}.{AMP_VARIANTS[name]}' if scope else AMP_VARIANTS[name]
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def use_compile(cfg) -> None:
    """``--compile``: ``model.backbone.torch_compile=True`` (a dict given in the config is kept).

    Raises:
        ConfigError: If the backbone has no ``torch_compile`` switch.
    """
    from mmdmpt.utils.errors import ConfigError

    backbone = (cfg.get('model') or {}).get('backbone') or {}
    if str(backbone.get('type', '')).split('.')[-1] != 'DMPTCLIPViT':
        raise ConfigError(
            f'--compile: model.backbone.type={backbone.get("type")!r} has no torch_compile '
            'switch; expected DMPTCLIPViT (or train without --compile).'
        )
    if not backbone.get('torch_compile'):
        cfg.model.backbone.torch_compile = True


def check_data(cfg) -> None:
    """``--check-data``: decode every image of every split; stop listing all bad files."""
    from mmengine.registry import init_default_scope

    from mmdmpt.datasets.verify import verify_dataset
    from mmdmpt.engine.prepare import DATALOADERS
    from mmdmpt.utils.errors import DataError

    datasets = {}
    for name in DATALOADERS:
        loader = cfg.get(name)
        if isinstance(loader, dict) and isinstance(loader.get('dataset'), dict):
            datasets[name.replace('_dataloader', '')] = loader['dataset']
    init_default_scope(cfg.get('default_scope', 'mmdmpt'))
    report = verify_dataset(datasets)
    print(report.format(), flush=True)
    if not report.ok:
        raise DataError(
            f'--check-data: {len(report.bad_files)} bad file(s) or split(s); see the list above.'
        )


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from mmdmpt.engine.launch import (
        build_runner,
        load_config,
        missing_inputs_error,
        remove_failed_start,
        teardown_distributed,
    )
    from mmdmpt.engine.prepare import prepare_config
    from mmdmpt.utils.errors import MMDMPTError, TrainingError

    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    cfg = merge_args(cfg, args)
    problems = missing_inputs(cfg)
    if problems:
        raise missing_inputs_error(problems, 'training')
    prepare_config(cfg)  # key checks and derived values before any folder is written
    if args.check_data:
        check_data(cfg)

    runner = None
    try:
        runner = build_runner(cfg)
        runner.train()
    except MMDMPTError as exc:
        if not isinstance(exc, TrainingError):  # a diverged run keeps its log
            remove_failed_start(runner)
        raise
    teardown_distributed()
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main))
