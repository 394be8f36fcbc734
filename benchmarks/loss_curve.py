"""Per-step training losses of a small config on the CPU, to compare two versions of the code.

Trains ``--config`` (default: the tiny DMPT config of the tests,
``tests/data/tiny_dmpt_rgbnt201.py``, a 3-layer CLIP-architecture ViT at
64x32) on a synthetic RGBNT201 tree (:func:`mmdmpt.testing.make_synthetic`,
6 training identities x 8 samples) for ``--epochs`` epochs with the Runner,
in fp32, fixed seed and deterministic mode, no validation, and records every
iteration's loss terms as the model returns them (not the logger's smoothed
values). ``--out FILE`` writes them as JSON; ``--compare FILE`` compares with
a stored curve and fails (exit 1) when a step's ``loss`` differs by more than
``--rtol`` relative (default 1e-5).

A curve depends on the machine's floating-point kernels (vector width,
threads): compare curves taken on the same machine, e.g. before and after a
change of the model code. The tests compare the fast path with a plain
open_clip reference in one process instead.

Examples::

    python benchmarks/loss_curve.py --out work_dirs/benchmarks/loss_before.json
    python benchmarks/loss_curve.py --compare work_dirs/benchmarks/loss_before.json
"""

import argparse
import json
import os.path as osp
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import bench_utils as bu  # noqa: E402

DEFAULT_CONFIG = 'tests/data/tiny_dmpt_rgbnt201.py'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help=f'config ({DEFAULT_CONFIG})')
    parser.add_argument('--epochs', type=int, default=2, help='epochs (2)')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (1)')
    parser.add_argument(
        '--cfg-options', nargs='*', default=[], metavar='KEY=VALUE', help='config overrides'
    )
    parser.add_argument('--out', default=None, help='write the curve as JSON to this file')
    parser.add_argument('--compare', default=None, help='a stored curve to compare with')
    parser.add_argument('--rtol', type=float, default=1e-5, help='relative tolerance (1e-5)')
    return parser.parse_args(argv)


def train_curve(
    config: str, epochs: int, options: Sequence[str] = (), threads: int = 1
) -> List[Dict[str, float]]:
    """Train ``config`` on a synthetic tree; return each iteration's loss terms.

    Args:
        config (str): Config path (absolute or relative to the repository).
        epochs (int): Epochs to train.
        options (Sequence[str]): ``key=value`` config overrides.
        threads (int): Torch CPU threads. Defaults to 1.

    Returns:
        list[dict]: Per iteration, the float value of every loss term and
        ``loss`` (their sum).
    """
    import torch
    from mmengine.config import Config, DictAction
    from mmengine.hooks import Hook
    from mmengine.registry import RUNNERS, init_default_scope

    from mmdmpt.engine.launch import load_config
    from mmdmpt.testing import make_synthetic

    torch.set_num_threads(threads)
    path = config if osp.isabs(config) else osp.join(bu.ROOT, config)
    records: List[Dict[str, float]] = []

    class RecordLosses(Hook):
        priority = 'VERY_HIGH'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            outputs = outputs or {}
            records.append({k: float(v.detach()) for k, v in outputs.items() if 'loss' in k})

    with tempfile.TemporaryDirectory() as tmp:
        root = osp.join(tmp, 'RGBNT201')
        make_synthetic(
            root,
            layout='rgbnt201',
            num_ids=9,
            train_ids=4,
            samples_per_camera=2,
            height=64,
            width=32,
        )
        cfg = load_config(path)
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='*', action=DictAction, default={})
        overrides = parser.parse_args(['--o', *options]).o if options else {}
        cfg.merge_from_dict(overrides)
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[name].dataset.data_root = root
        cfg.work_dir = osp.join(tmp, 'work')
        cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs + 1)
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs + 1)
        cfg.randomness = dict(seed=0, deterministic=True)
        cfg = Config(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
        init_default_scope(cfg.get('default_scope', 'mmdmpt'))
        runner = RUNNERS.build(cfg)
        runner.register_hook(RecordLosses())
        runner.train()
    return records


def compare(curve: List[dict], stored: List[dict], rtol: float) -> List[str]:
    """The steps whose ``loss`` differs from ``stored`` by more than ``rtol`` (relative)."""
    problems = []
    if len(curve) != len(stored):
        problems.append(f'{len(curve)} steps vs {len(stored)} stored')
    for i, (a, b) in enumerate(zip(curve, stored)):
        diff = abs(a['loss'] - b['loss']) / max(abs(b['loss']), 1e-12)
        if diff > rtol:
            problems.append(f'step {i + 1}: loss {a["loss"]!r} vs {b["loss"]!r} ({diff:.2e})')
    return problems


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    curve = train_curve(args.config, args.epochs, args.cfg_options, args.threads)
    worst = 0.0
    stored = None
    if args.compare:
        with open(args.compare) as f:
            stored = json.load(f)['steps']
        for a, b in zip(curve, stored):
            worst = max(worst, abs(a['loss'] - b['loss']) / max(abs(b['loss']), 1e-12))
    for i, rec in enumerate(curve):
        extra = ''
        if stored is not None and i < len(stored):
            extra = f'  stored {stored[i]["loss"]:.9f}'
        print(f'step {i + 1:3d}: loss {rec["loss"]:.9f}{extra}')
    bu.write_json(args.out, dict(config=args.config, epochs=args.epochs, steps=curve))
    if stored is not None:
        problems = compare(curve, stored, args.rtol)
        print(f'largest relative difference {worst:.2e} (tolerance {args.rtol:g})')
        if problems:
            print('\n'.join(problems))
            raise SystemExit(1)
    return curve


if __name__ == '__main__':
    main()
