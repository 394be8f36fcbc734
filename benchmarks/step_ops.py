"""Operators of one training step, DMPT vs. full fine-tuning: deterministic counts.

On a GPU a training step of ViT-B/16 at batch 64 is bound by the host: every
operator is one or more kernel launches, and every read of a device value on
the host stops the pipeline. This script counts, on the CPU, what a step
dispatches, with the same code path and dtypes as on a GPU (``--amp bf16``:
``torch.autocast('cpu', dtype=torch.bfloat16)``, as ``--amp`` does on a GPU),
so the counts stand in for the GPU's kernels and syncs and do not depend on
the machine's load.

The step is the Runner's: the model's forward in ``'loss'`` mode under
autocast, ``parse_losses`` and the config's optimizer wrapper's
``update_params`` (backward, the non-finite check, the optimizer, zero_grad),
on a random P x K batch whose data samples carry labels and an all-true
``modality_mask`` as the data pipeline makes them. Two variants are built
from the real configs with a narrow tower of the ViT-B/16 layout (12 layers,
16x16 patches, 256x128 inputs, 3 modalities, a 12-layer text tower; width
``--width``, default 64): ``dmpt`` (``configs/dmpt/dmpt_vitb_rgbnt201.py``)
and ``full_ft`` (``configs/baselines/clip_vitb_fullft_rgbnt201.py``). One
untimed step runs first (optimizer state, autocast caches); the next is
counted.

What is counted (``TorchDispatchMode``: every ATen operator that reaches a
kernel, forward, backward and optimizer, after autograd and autocast):

* ``ops``: operator calls that are neither views nor launch no kernel, i.e.
  all calls except those whose schema returns an alias of an input (``view``,
  ``t``, ``permute``, ``expand``, ``detach``, ``split``, ...; plus
  ``_unsafe_view`` / ``_reshape_alias``), ``empty*`` / ``new_empty*``
  (allocations), the profiler's ``_record_function_*`` markers and
  ``promote_types`` / ``result_type``.
* ``copies``: calls of ``copy_``, ``_to_copy``, ``clone``, ``_copy_from``,
  ``lift_fresh_copy`` and the ``*_scatter`` copies (``slice_scatter``,
  ``select_scatter``, ``as_strided_scatter``): operators that only move
  bytes. ``cat`` / ``stack`` are counted as ops, not copies.
* ``weight_casts_per_forward``: dtype casts (``_to_copy`` / ``copy_`` to
  another dtype) of a *frozen* parameter or buffer of the model during the
  forward pass (what autocast re-does every forward for weights that do not
  require grad). Casts of trainable parameters (fp32 master weights, cached
  once per forward by autocast) are reported as ``trainable_casts_per_forward``.
* ``host_syncs``: operators that make the host wait for a device value:
  ``_local_scalar_dense`` (``item()``, ``bool()``, ``int()`` of a tensor),
  ``nonzero``, ``is_nonzero``, ``equal``, ``masked_select``, ``unique*``,
  ``repeat_interleave`` without ``output_size``, ``index`` / ``index_put`` with
  a boolean mask, and copies from a non-CPU device to the CPU. Python-level
  reads of CPU tensors (``tolist()``, ``numpy()``: host metadata such as the
  data samples' ``modality_mask``) are not dispatched and not counted; on a
  GPU a read of device data shows as a device-to-host copy, which is.
* ``saved_weight_copy_mb``: MiB of the distinct storages autograd saves for
  the backward pass in the forward (``saved_tensors_hooks``) that are the
  output of a cast of a parameter or buffer: weight copies kept alive until
  the backward pass.
* ``matmul_flop_ratio``: FLOPs of the matrix products of the step (``mm``,
  ``addmm``, ``bmm``, ``baddbmm``, convolutions and attention, forward and
  backward, by the formulas of ``torch.utils.flop_counter``) of
  the variant over those of ``full_ft``. At a narrow width attention is a
  larger share of the FLOPs than at ViT-B's 768 (``--width 768`` gives the
  ViT-B/16 figure; slower).

Also reported: ``ops_by_phase`` (``forward``: model and losses; ``update``:
backward, optimizer, zero_grad; ``check``: the non-finite check's read of its
device flag, which ``ReIDRunner`` does once per iteration where MMEngine
reads the logged losses anyway; not part of ``ops`` / ``host_syncs``, its
syncs are ``check_syncs``) and the most frequent operators.

Like ``ReIDRunner``, the script keeps the frozen tower in the AMP dtype
(``set_compute_dtype``) under ``--amp`` and defers the non-finite check.

Examples::

    python benchmarks/step_ops.py --out work_dirs/benchmarks/step_ops.json
    python benchmarks/step_ops.py --amp none --variants dmpt
    python benchmarks/step_ops.py --width 768 --batch-size 4   # ViT-B/16 FLOP ratio
"""

import argparse
import collections
import contextlib
import os.path as osp
import sys
from typing import Dict, Iterator, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import bench_utils as bu  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

VARIANTS = ('dmpt', 'full_ft')
CONFIGS = {
    'dmpt': 'configs/dmpt/dmpt_vitb_rgbnt201.py',
    'full_ft': 'configs/baselines/clip_vitb_fullft_rgbnt201.py',
}
MIB = 2.0**20

_COPY_OPS = {
    'copy_',
    '_to_copy',
    'clone',
    '_copy_from',
    '_copy_from_and_resize',
    'lift_fresh_copy',
    'slice_scatter',
    'select_scatter',
    'as_strided_scatter',
}
# Calls that launch no kernel: allocations, the profiler's markers, dtype queries.
_ALLOC_OPS = {
    'empty',
    'empty_strided',
    'new_empty',
    'new_empty_strided',
    'empty_like',
    '_record_function_enter_new',
    '_record_function_exit',
    'promote_types',
    'result_type',
}
_VIEW_LIKE = {'_unsafe_view', '_reshape_alias', 'lift_fresh'}
_SYNC_OPS = {
    '_local_scalar_dense',
    'nonzero',
    'is_nonzero',
    'equal',
    'masked_select',
    '_unique',
    '_unique2',
    'unique_dim',
    'unique_consecutive',
    'unique_dim_consecutive',
}


def _flop_formulas() -> dict:
    from torch.utils.flop_counter import flop_registry

    return dict(flop_registry)


_FLOP_FORMULAS = _flop_formulas()


def narrow_vitb_clip(width: int = 64) -> dict:
    """The ViT-B/16 layout at width ``width``: 12 visual and 12 text layers, 16x16 patches.

    Args:
        width (int): Visual width (heads: ``width // 16``, at least 1); the text
            tower has width 64. Defaults to 64.

    Returns:
        dict: A ``clip_model`` dict for ``DMPTCLIPViT``.
    """
    heads = max(1, width // 16) if width < 768 else 12
    return dict(
        embed_dim=max(32, width // 2),
        vision_cfg=dict(width=width, layers=12, heads=heads, patch_size=16, image_size=224),
        text_cfg=dict(width=64, layers=12, heads=2, context_length=77, vocab_size=49408),
    )


def _op_name(func) -> str:
    return func._schema.name.split('::')[-1]


def _is_view(func) -> bool:
    if _op_name(func) in _VIEW_LIKE:
        return True
    return bool(getattr(func, 'is_view', False)) or any(
        r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns
    )


def _tensors(values) -> Iterator[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value)


def _storage(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


class StepCounter(TorchDispatchMode):
    """Count the operators of a step (see the module docstring for the definitions).

    Args:
        model (nn.Module): The model; its parameters and buffers are the
            weights whose casts are counted.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.weights: Dict[int, bool] = {}  # storage -> frozen
        for param in model.parameters():
            self.weights[_storage(param)] = not param.requires_grad
        for buf in model.buffers():
            self.weights.setdefault(_storage(buf), True)
        self.phase = 'other'
        self.ops: collections.Counter = collections.Counter()  # op name -> calls
        self.by_phase: collections.Counter = collections.Counter()
        self.copies = 0
        self.syncs: collections.Counter = collections.Counter()
        self.frozen_casts = 0
        self.trainable_casts = 0
        self.allocs = 0
        self.views = 0
        self.flops = 0
        self._cast_outputs: Dict[int, torch.Tensor] = {}  # storage -> cast output (kept)

    @contextlib.contextmanager
    def in_phase(self, name: str) -> Iterator[None]:
        """Attribute the operators run inside to phase ``name``."""
        previous, self.phase = self.phase, name
        try:
            yield
        finally:
            self.phase = previous

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _op_name(func)
        if _is_view(func):
            self.views += 1
            return out
        if name in _ALLOC_OPS:
            self.allocs += 1
            return out
        self.ops[name] += 1
        self.by_phase[self.phase] += 1
        formula = _FLOP_FORMULAS.get(func.overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        if name in _COPY_OPS:
            self.copies += 1
            self._cast(name, args, kwargs, out)
        if self._is_sync(name, args, kwargs, out):
            self.syncs[(self.phase, name)] += 1
        return out

    def _cast(self, name, args, kwargs, out) -> None:
        if name == '_to_copy':
            src, dst = args[0], out
        elif name == 'copy_':
            dst, src = args[0], args[1]
        else:
            return
        if not isinstance(src, torch.Tensor) or src.dtype == dst.dtype:
            return
        frozen = self.weights.get(_storage(src))
        if frozen is None or self.phase != 'forward':
            return
        if frozen:
            self.frozen_casts += 1
        else:
            self.trainable_casts += 1
        self._cast_outputs[_storage(dst)] = dst

    @staticmethod
    def _is_sync(name, args, kwargs, out) -> bool:
        if name in _SYNC_OPS:
            return True
        if name == 'repeat_interleave':
            return kwargs.get('output_size') is None and isinstance(args[0], torch.Tensor)
        if name in ('index', 'index_put', 'index_put_', '_index_put_impl_'):
            indices = args[1] if len(args) > 1 else kwargs.get('indices', ())
            return any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                for i in indices or ()
            )
        if name in ('_to_copy', 'copy_'):
            src = args[0] if name == '_to_copy' else args[1]
            dst = out if name == '_to_copy' else args[0]
            return (
                isinstance(src, torch.Tensor)
                and src.device.type != 'cpu'
                and dst.device.type == 'cpu'
            )
        return False

    def saved_hooks(self, saved: Dict[int, int]):
        """``saved_tensors_hooks`` recording the bytes of saved casts of weights in ``saved``."""

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            key = _storage(tensor)
            if key in self._cast_outputs and key not in saved:
                saved[key] = tensor.untyped_storage().nbytes()
            return tensor

        return torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)

    def release(self) -> None:
        """Drop the references to the cast outputs kept during the forward pass."""
        self._cast_outputs.clear()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS, help='what to count'
    )
    parser.add_argument('--width', type=int, default=64, help='visual width (64)')
    parser.add_argument('--batch-size', type=int, default=8, help='samples per batch (8)')
    parser.add_argument(
        '--amp', default='bf16', choices=['none', 'bf16'], help="autocast dtype ('bf16')"
    )
    parser.add_argument(
        '--backbone',
        nargs='*',
        default=[],
        metavar='KEY=VALUE',
        help='extra model.backbone settings for both variants, e.g. with_cp=True',
    )
    parser.add_argument('--top', type=int, default=12, help='most frequent operators listed')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the results as JSON to this file')
    return parser.parse_args(argv)


def _parse_overrides(items: Sequence[str]) -> dict:
    import ast

    out = {}
    for item in items:
        key, _, value = item.partition('=')
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def build_variant(args: argparse.Namespace, variant: str):
    """Build one variant: ``(model, optim_wrapper, inputs, data_samples, amp context)``."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    device = torch.device('cpu')
    torch.manual_seed(args.seed)
    overrides = dict(clip_model=narrow_vitb_clip(args.width), img_size=(256, 128))
    overrides.update(_parse_overrides(args.backbone))
    model_cfg = bu.load_model_cfg(
        CONFIGS[variant], tiny=False, quick_gelu='true', overrides=overrides
    )
    model = bu.build_model(model_cfg, device)
    model.train()
    cfg = Config.fromfile(osp.join(bu.ROOT, CONFIGS[variant]))
    wrapper_cfg = (
        cfg.optim_wrapper.to_dict()
        if hasattr(cfg.optim_wrapper, 'to_dict')
        else dict(cfg.optim_wrapper)
    )
    optim_wrapper = build_optim_wrapper(model, wrapper_cfg)
    # What ReIDRunner does: the non-finite flag is read once per iteration before
    # the after_train_iter hooks, and under AMP the frozen tower is kept in the
    # AMP dtype.
    if hasattr(optim_wrapper, 'check_pending'):
        optim_wrapper.deferred_check = True
    if args.amp != 'none' and hasattr(model.backbone, 'set_compute_dtype'):
        model.backbone.set_compute_dtype(args.amp)
    backbone = model.backbone
    inputs, samples = bu.make_batch(
        args.batch_size, backbone.num_modalities, backbone.img_size, device, seed=args.seed
    )
    for sample in samples:  # as PackMultiModalReIDInputs writes it
        sample.set_metainfo(dict(modality_mask=torch.ones(backbone.num_modalities, dtype=bool)))
    args_amp = argparse.Namespace(amp=args.amp)
    return model, optim_wrapper, inputs, samples, lambda: bu.amp_context(args_amp, device)


def count_variant(args: argparse.Namespace, variant: str) -> Dict[str, object]:
    """Count the second training step of one variant."""
    model, optim_wrapper, inputs, samples, amp = build_variant(args, variant)

    def step(counter: Optional[StepCounter] = None, saved: Optional[Dict[int, int]] = None):
        phase = counter.in_phase if counter is not None else lambda name: contextlib.nullcontext()
        hooks = counter.saved_hooks(saved) if counter is not None else contextlib.nullcontext()
        with phase('forward'), hooks, amp():
            losses = model(inputs, samples, mode='loss')
        with phase('forward'):
            loss, _ = model.parse_losses(losses)
        if counter is not None:
            counter.release()
        with phase('update'):
            optim_wrapper.update_params(loss)
        if hasattr(optim_wrapper, 'check_pending'):
            with phase('check'):
                optim_wrapper.check_pending()

    step()  # optimizer state, first-call work
    counter = StepCounter(model)
    saved: Dict[int, int] = {}
    with counter:
        step(counter, saved)
    step_syncs = {k[1]: n for k, n in counter.syncs.items() if k[0] != 'check'}
    check_syncs = sum(n for k, n in counter.syncs.items() if k[0] == 'check')
    return dict(
        ops=sum(n for k, n in counter.ops.items()) - counter.by_phase.get('check', 0),
        copies=counter.copies,
        weight_casts_per_forward=counter.frozen_casts,
        trainable_casts_per_forward=counter.trainable_casts,
        host_syncs=sum(step_syncs.values()),
        host_sync_ops=step_syncs,
        check_syncs=check_syncs,
        saved_weight_copy_mb=sum(saved.values()) / MIB,
        matmul_flops=counter.flops,
        ops_by_phase=dict(counter.by_phase),
        views=counter.views,
        allocations=counter.allocs,
        top_ops=dict(counter.ops.most_common(args.top)),
        op_counts=dict(counter.ops),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )


def report(args: argparse.Namespace, results: Dict[str, dict]) -> str:
    """Add ``matmul_flop_ratio`` and return the printed table."""
    base = results.get('full_ft')
    for res in results.values():
        if base is not None:
            res['matmul_flop_ratio'] = res['matmul_flops'] / base['matmul_flops']
    keys = [
        'ops',
        'copies',
        'weight_casts_per_forward',
        'trainable_casts_per_forward',
        'host_syncs',
        'saved_weight_copy_mb',
        'matmul_flop_ratio',
    ]
    header = ['variant', *keys, 'ops fwd / update']
    rows: List[List[str]] = []
    for name, res in results.items():
        row = [name]
        for key in keys:
            value = res.get(key)
            if value is None:
                row.append('-')
            elif isinstance(value, float):
                row.append(f'{value:.3f}')
            else:
                row.append(f'{value:,}')
        phases = res['ops_by_phase']
        row.append(f'{phases.get("forward", 0):,} / {phases.get("update", 0):,}')
        rows.append(row)
    info = bu.machine_info(torch.device('cpu'))
    title = (
        f'step_ops: one training step, ViT-B/16 layout at width {args.width}, batch '
        f'{args.batch_size} samples x 3 modalities, 256x128, amp {args.amp}, torch '
        f'{info["torch"]}, {info["date"]}'
    )
    lines = [title, bu.format_table(header, rows)]
    for name, res in results.items():
        top = ', '.join(f'{op} {n}' for op, n in res['top_ops'].items())
        lines.append(f'{name} most frequent: {top}')
        if res['host_sync_ops']:
            lines.append(f'{name} host syncs: {res["host_sync_ops"]}')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    results = {variant: count_variant(args, variant) for variant in args.variants}
    print(report(args, results))
    bu.write_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
