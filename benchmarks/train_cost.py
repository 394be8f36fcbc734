"""Training cost of DMPT vs. full fine-tuning: seconds per step and peak memory.

Variants, each built from the real configs through ``MultiModalReID``
(``pretrained=None``: random weights cost the same) and each run in its own
child process so that peak memory is measured per variant:

* ``dmpt``: ``configs/dmpt/dmpt_vitb_rgbnt201.py`` (frozen CLIP ViT-B/16 +
  prompts, 256x128, 3 modalities);
* ``dmpt_cp``: the same with ``with_cp=True`` (gradient checkpointing);
* ``dmpt_lowmem``: the same with ``low_memory=True`` (checkpointing with the
  block boundaries in bf16, the frozen tower in bf16, also without ``--amp``);
* ``full_ft``: ``configs/baselines/clip_vitb_fullft_rgbnt201.py``
  (``frozen=False``, no prompts);
* ``dmpt_compiled`` / ``full_ft_compiled``: ``dmpt`` / ``full_ft`` with
  ``torch_compile`` (``--compile-mode``; compilation happens in the warm-up
  steps, which ``--warmup`` must leave room for). Their ratios are also given
  to each other (``vs full_ft`` of a compiled variant is to ``full_ft_compiled``
  when it ran).

Under ``--amp`` the frozen tower is kept in the AMP dtype
(``set_compute_dtype``), as ``ReIDRunner`` does for ``tools/train.py --amp``.

A training step is: forward in ``'loss'`` mode, sum of the losses, backward,
optimizer step on the trainable parameters (the config's
``optim_wrapper.optimizer``: ``torch.optim.Adam`` with its ``lr`` and
``weight_decay``), ``zero_grad(set_to_none=True)``. Every
variant sees the same random batch (``--batch-size`` samples in P x K order,
K = 4). The step time is the median of ``--steps`` steps after ``--warmup``
untimed ones. Peak memory is the child's peak RSS on the CPU
(``ru_maxrss``, absolute: it includes the Python/torch runtime and the model
build) or ``torch.cuda.max_memory_allocated`` on a GPU; the RSS after the
model build is reported next to it. Ratios are to ``full_ft`` of the same run.

Examples::

    python benchmarks/train_cost.py --out work_dirs/benchmarks/train_cost.json
    python benchmarks/train_cost.py --device cuda --amp bf16 --batch-size 64
"""

import argparse
import os
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import bench_utils as bu  # noqa: E402
import torch  # noqa: E402

VARIANTS = ('dmpt', 'dmpt_cp', 'full_ft')
ALL_VARIANTS = ('dmpt', 'dmpt_cp', 'dmpt_lowmem', 'full_ft', 'dmpt_compiled', 'full_ft_compiled')


def add_variant_args(parser: argparse.ArgumentParser, default: Sequence[str] = VARIANTS) -> None:
    """Add ``--dmpt-config``, ``--fullft-config`` and ``--variants`` (of :data:`VARIANTS`).

    Shared by the scripts that build the training variants the same way
    (``tensor_memory.py``, ``profile_step.py``).
    """
    parser.add_argument(
        '--dmpt-config', default='configs/dmpt/dmpt_vitb_rgbnt201.py', help='DMPT config'
    )
    parser.add_argument(
        '--fullft-config',
        default='configs/baselines/clip_vitb_fullft_rgbnt201.py',
        help='full fine-tuning config',
    )
    parser.add_argument(
        '--variants',
        nargs='+',
        default=list(default),
        choices=ALL_VARIANTS,
        help=f'what to run ({" ".join(default)})',
    )
    parser.add_argument(
        '--compile-mode',
        default=None,
        help="torch.compile mode of the *_compiled variants (default: torch's; "
        "'reduce-overhead' = CUDA graphs)",
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_variant_args(parser)
    bu.add_common_args(parser, steps=5, warmup=2)
    return parser.parse_args(argv)


def variant_model_cfg(args: argparse.Namespace, variant: str) -> dict:
    """The model config of one variant."""
    overrides = {}
    if variant.endswith('_compiled'):
        mode = getattr(args, 'compile_mode', None)
        overrides['torch_compile'] = dict(mode=mode) if mode else True
    if variant.startswith('full_ft'):
        return bu.load_model_cfg(
            args.fullft_config, tiny=args.tiny, quick_gelu=args.quick_gelu, overrides=overrides
        )
    overrides['with_cp'] = variant == 'dmpt_cp'
    overrides['low_memory'] = variant == 'dmpt_lowmem'
    return bu.load_model_cfg(
        args.dmpt_config, tiny=args.tiny, quick_gelu=args.quick_gelu, overrides=overrides
    )


def build_training(
    args: argparse.Namespace, variant: str, device: torch.device
) -> Tuple[torch.nn.Module, List[torch.nn.Parameter], tuple, Callable[[], None]]:
    """Build one variant in train mode with its optimizer and batch.

    Returns:
        tuple: ``(model, trainable params, (inputs, data_samples), step)``;
        ``step()`` is one training step: forward in ``'loss'`` mode (under
        ``--amp``), sum of the losses, backward, the config's optimizer,
        ``zero_grad(set_to_none=True)``.
    """
    model = bu.build_model(variant_model_cfg(args, variant), device)
    model.train()
    backbone = model.backbone
    if args.amp != 'none' and backbone.compute_dtype is None:
        backbone.set_compute_dtype(args.amp)  # as ReIDRunner does under --amp
    params = [p for p in model.parameters() if p.requires_grad]
    config = args.fullft_config if variant.startswith('full_ft') else args.dmpt_config
    optimizer = bu.build_optimizer(config, params)
    inputs, samples = bu.make_batch(
        args.batch_size, backbone.num_modalities, backbone.img_size, device, seed=args.seed
    )

    def step() -> None:
        with bu.amp_context(args, device):
            losses = model(inputs, samples, mode='loss')
            loss, _ = model.parse_losses(losses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, params, (inputs, samples), step


def run_variant(args: argparse.Namespace, variant: str) -> Dict[str, float]:
    """Build one variant, time its training steps, return its numbers."""
    device = bu.setup_torch(args)
    _, params, (inputs, _samples), step = build_training(args, variant, device)
    bu.synchronize(device)
    built_mb = bu.now_memory_mb(device)
    build_peak_mb = bu.peak_memory_mb(device)

    load_start = os.getloadavg()[0]
    times = bu.time_iterations(step, args.steps, args.warmup, device)
    return dict(
        step_s=bu.median(times),
        images_per_s=inputs.shape[0] * inputs.shape[1] / bu.median(times),
        peak_mb=bu.peak_memory_mb(device),
        after_build_mb=built_mb,
        build_peak_mb=build_peak_mb,
        step_s_all=times,
        trainable_params=sum(p.numel() for p in params),
        threads=torch.get_num_threads(),
        load_avg=[load_start, os.getloadavg()[0]],
    )


def report(args: argparse.Namespace, results: Dict[str, dict], device: torch.device) -> str:
    """Add the ratios to ``full_ft`` and return the printed table."""
    rows: List[List[str]] = []
    for name, res in results.items():
        base = results.get('full_ft')
        if name.endswith('_compiled') and 'full_ft_compiled' in results:
            base = results['full_ft_compiled']  # the same mode
        if base is not None:
            res['step_ratio'] = res['step_s'] / base['step_s']
            res['peak_ratio'] = res['peak_mb'] / base['peak_mb']
        if 'dmpt' in results and name != 'dmpt':
            res['step_vs_dmpt'] = res['step_s'] / results['dmpt']['step_s']
        rows.append(
            [
                name,
                f'{res["trainable_params"]:,}',
                f'{res["step_s"]:.3f}',
                f'{res["step_ratio"]:.2f}x' if base else '-',
                f'{res.get("images_per_s", 0.0):,.0f}',
                f'{res["peak_mb"]:,.0f}',
                f'{res["peak_ratio"]:.2f}x' if base else '-',
                f'{res["after_build_mb"]:,.0f}',
            ]
        )
    mem = 'peak RSS' if device.type == 'cpu' else 'max allocated'
    header = [
        'variant',
        'trainable params',
        's / step',
        'vs full_ft',
        'images / s',
        f'{mem} (MiB)',
        'vs full_ft',
        'after build (MiB)',
    ]
    info = bu.machine_info(device)
    title = (
        f'train_cost: batch {args.batch_size} samples, '
        f'{"tiny CLIP" if args.tiny else "ViT-B/16"}, amp {args.amp}, median of {args.steps} '
        f'steps after {args.warmup} warm-up, best of {args.rounds} round(s), device '
        f'{info["device"]}, torch {info["torch"]}, {info["threads"]} threads, {info["date"]}'
    )
    return title + '\n' + bu.format_table(header, rows)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results = bu.run_benchmark(__file__, argv, args, lambda variant: run_variant(args, variant))
    if results is None:  # child process
        return {}
    print(report(args, results, torch.device(args.device)))
    bu.write_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
