"""Where a training step's time goes: torch profiler tables per variant.

Builds the variants of ``train_cost.py`` the same way, runs ``--warmup``
untimed steps, then profiles ``--steps`` steps and prints, per variant, the
step's wall time, the number of operator calls and kernel launches, and the
operators with the largest self time on the device (CUDA) or the CPU. Use it
to see why one variant is slower than another; ``train_cost.py`` stays the
source of the reported timings.

``--out FILE`` writes the per-variant summary (``step_s``, ``op_calls``,
``kernels`` per step, without the tables) as JSON.

Example::

    python benchmarks/profile_step.py --device cuda --amp bf16 --batch-size 64
"""

import argparse
import os.path as osp
import sys
import time
from typing import Dict, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import bench_utils as bu  # noqa: E402
import train_cost  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    train_cost.add_variant_args(parser, default=('dmpt', 'full_ft'))
    parser.add_argument('--top', type=int, default=15, help='operators listed per variant (15)')
    bu.add_common_args(parser, steps=3, warmup=3)
    return parser.parse_args(argv)


def profile_variant(args: argparse.Namespace, variant: str) -> Dict[str, object]:
    """Profile ``args.steps`` training steps of one variant; return its summary."""
    from torch.profiler import ProfilerActivity, profile

    device = bu.setup_torch(args)
    step = train_cost.build_training(args, variant, device)[-1]

    for _ in range(args.warmup):
        step()
    bu.synchronize(device)
    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        bu.synchronize(device)
        wall = (time.perf_counter() - start) / args.steps
    averages = prof.key_averages()
    sort_key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    table = averages.table(sort_by=sort_key, row_limit=args.top, max_name_column_width=60)
    calls = sum(e.count for e in averages) / args.steps
    kernels = 0.0
    if device.type == 'cuda':
        kernels = sum(1 for e in prof.events() if e.device_type.name == 'CUDA') / args.steps
    return dict(step_s=wall, op_calls=calls, kernels=kernels, table=table)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    args = parse_args(argv)
    summary = {}
    for variant in args.variants:
        res = profile_variant(args, variant)
        summary[variant] = {k: v for k, v in res.items() if k != 'table'}
        print(
            f'== {variant}: {res["step_s"] * 1000:.1f} ms / step under the profiler, '
            f'{res["op_calls"]:,.0f} profiled calls / step'
            + (f', {res["kernels"]:,.0f} device kernels / step' if res['kernels'] else '')
        )
        print(res['table'])
        sys.stdout.flush()
    bu.write_json(args.out, summary)
    return summary


if __name__ == '__main__':
    main()
