"""Tensor memory of a training step, DMPT vs. full fine-tuning, allocator aside.

``train_cost.py`` reports the process's peak RSS on the CPU. That figure also
holds the Python/torch runtime (libraries mapped at import) and whatever
glibc's ``malloc`` keeps after ``free`` (holes between long-lived tensors),
neither of which belongs to the method. This script measures what the
method itself needs: the bytes of live tensors, as torch's CPU allocator
reports every allocation and free to the profiler (``profile_memory=True``),
which is what ``torch.cuda.max_memory_allocated`` measures on a GPU.

Per variant (the same three as ``train_cost.py``, built the same way):

* ``weights_mb``: parameters and buffers;
* ``saved_mb``: tensors autograd keeps for the backward pass after one
  forward in ``'loss'`` mode (distinct storages, weights excluded; for
  ``dmpt_cp`` the checkpointed blocks' inputs);
* ``peak_mb``: the largest number of live tensor bytes over the model build
  and ``--steps`` training steps (forward, backward, the config's optimizer,
  ``zero_grad(set_to_none=True)``), measured from the start of the child
  process; the build's own peak is ``build_peak_mb``, the steps'
  ``step_peak_mb``;
* ratios of ``step_peak_mb`` to ``full_ft``.

Each variant runs in its own child process. Run-time figures of the
profiler itself are not measured here (use ``train_cost.py`` for time).

Example::

    python benchmarks/tensor_memory.py --out work_dirs/benchmarks/tensor_memory.json
"""

import argparse
import os.path as osp
import sys
from typing import Dict, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import bench_utils as bu  # noqa: E402
import torch  # noqa: E402
import train_cost  # noqa: E402

VARIANTS = train_cost.VARIANTS
MIB = 2.0**20


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    train_cost.add_variant_args(parser)
    bu.add_common_args(parser, steps=2, warmup=0)
    args = parser.parse_args(argv)
    if args.device != 'cpu':
        parser.error(
            '--device: this script measures the CPU allocator; on a GPU use '
            'train_cost.py, whose max_memory_allocated is the same quantity'
        )
    if args.steps < 1:
        parser.error(f'--steps must be >= 1, got {args.steps}')
    return args


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def saved_bytes(model: torch.nn.Module, inputs, samples) -> int:
    """Bytes autograd saves in one ``'loss'`` forward (distinct storages, weights excluded)."""
    skip = {_storage_key(t) for t in (*model.parameters(), *model.buffers())}
    seen: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in skip and key not in seen:
            seen[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        losses = model(inputs, samples, mode='loss')
    del losses
    return sum(seen.values())


def run_variant(args: argparse.Namespace, variant: str) -> Dict[str, float]:
    """Build one variant and run its steps under the memory profiler."""
    from torch.profiler import ProfilerActivity, profile

    device = bu.setup_torch(args)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model, params, (inputs, samples), step = train_cost.build_training(args, variant, device)
        with torch.profiler.record_function('mmdmpt_bench_steps'):
            for _ in range(args.steps):
                step()
    events = prof.profiler.kineto_results.events()
    steps = [e for e in events if e.name() == 'mmdmpt_bench_steps']
    if len(steps) != 1:
        raise RuntimeError(f'expected one profiled step range, found {len(steps)}')
    steps_start = steps[0].start_ns()
    memory = sorted(
        (e.start_ns(), e.nbytes()) for e in events if e.name() == '[memory]' and e.nbytes()
    )
    total, build_peak, step_peak, at_steps = 0, 0, 0, None
    for start, nbytes in memory:
        if start >= steps_start and at_steps is None:
            at_steps = total
        total += nbytes
        if start < steps_start:
            build_peak = max(build_peak, total)
        else:
            step_peak = max(step_peak, total)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    saved = saved_bytes(model, inputs, samples)
    return dict(
        weights_mb=weights / MIB,
        saved_mb=saved / MIB,
        after_build_mb=(at_steps if at_steps is not None else total) / MIB,
        build_peak_mb=build_peak / MIB,
        step_peak_mb=step_peak / MIB,
        peak_mb=max(build_peak, step_peak) / MIB,
        trainable_params=sum(p.numel() for p in params),
        # run_variants picks the round with the smallest step_s; memory is
        # deterministic, so any round will do.
        step_s=0.0,
    )


def report(args: argparse.Namespace, results: Dict[str, dict]) -> str:
    """Add the ratios to ``full_ft`` and return the printed table."""
    base = results.get('full_ft')
    rows = []
    for name, res in results.items():
        if base is not None:
            res['step_peak_ratio'] = res['step_peak_mb'] / base['step_peak_mb']
            res['saved_ratio'] = res['saved_mb'] / base['saved_mb']
        rows.append(
            [
                name,
                f'{res["trainable_params"]:,}',
                f'{res["weights_mb"]:,.0f}',
                f'{res["saved_mb"]:,.0f}',
                f'{res["saved_ratio"]:.2f}x' if base else '-',
                f'{res["after_build_mb"]:,.0f}',
                f'{res["step_peak_mb"]:,.0f}',
                f'{res["step_peak_ratio"]:.2f}x' if base else '-',
            ]
        )
    header = [
        'variant',
        'trainable params',
        'weights (MiB)',
        'saved for backward (MiB)',
        'vs full_ft',
        'live after build (MiB)',
        'live peak in steps (MiB)',
        'vs full_ft',
    ]
    info = bu.machine_info(torch.device('cpu'))
    title = (
        f'tensor_memory: live tensor bytes (CPU allocator, profiler), batch '
        f'{args.batch_size} samples, {"tiny CLIP" if args.tiny else "ViT-B/16"}, amp '
        f'{args.amp}, {args.steps} step(s), torch {info["torch"]}, {info["date"]}'
    )
    return title + '\n' + bu.format_table(header, rows)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results = bu.run_benchmark(
        __file__, argv, args, lambda variant: run_variant(args, variant), rounds=1
    )
    if results is None:  # child process
        return {}
    for res in results.values():
        for key in ('step_s', 'step_s_rounds'):
            res.pop(key, None)
    print(report(args, results))
    bu.write_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
