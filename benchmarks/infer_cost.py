"""Inference cost of DMPT vs. the bare frozen open_clip visual tower.

Two variants, each in its own child process (peak memory per variant):

* ``dmpt``: ``MultiModalReID`` built from ``configs/dmpt/dmpt_vitb_rgbnt201.py``
  (``pretrained=None``) in eval mode, ``model(inputs, mode='tensor')``: the
  test feature of ``--batch-size`` samples x M modalities (prompts, PromptIBind,
  head);
* ``frozen_backbone``: the plain open_clip ``VisionTransformer`` of the same
  CLIP config (image size, activation), built with open_clip's own classes,
  called on the same ``N * M`` images (``visual(images)``: its pooled,
  projected feature).

Both run under ``torch.no_grad()`` (as MMEngine's test loop does). Under
``--amp`` both frozen towers are cast to the AMP dtype once
(``set_compute_dtype`` for DMPT, ``.to(dtype)`` for open_clip's tower). The time
is the median of ``--steps`` forwards after ``--warmup`` untimed ones; peak
memory is the child's peak RSS on the CPU (absolute) or
``torch.cuda.max_memory_allocated`` on a GPU. Ratios are to
``frozen_backbone`` of the same run.

Examples::

    python benchmarks/infer_cost.py --out work_dirs/benchmarks/infer_cost.json
    python benchmarks/infer_cost.py --device cuda --amp bf16 --batch-size 64
"""

import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import bench_utils as bu  # noqa: E402
import torch  # noqa: E402

VARIANTS = ('dmpt', 'frozen_backbone')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--config', default='configs/dmpt/dmpt_vitb_rgbnt201.py', help='DMPT config'
    )
    parser.add_argument(
        '--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS, help='what to run'
    )
    bu.add_common_args(parser, steps=5, warmup=2)
    return parser.parse_args(argv)


def build_bare_visual(backbone_cfg: dict) -> torch.nn.Module:
    """open_clip's visual tower for the backbone config (random weights, frozen)."""
    from mmdmpt.models.utils import build_clip, resolve_clip_config, resolve_quick_gelu

    img_size = tuple(backbone_cfg.get('img_size', (256, 128)))
    cfg, cfg_quick_gelu, name = resolve_clip_config(
        backbone_cfg.get('clip_model', 'ViT-B-16'), img_size
    )
    quick_gelu, _ = resolve_quick_gelu(backbone_cfg.get('quick_gelu'), None, cfg_quick_gelu, name)
    clip = build_clip(cfg, quick_gelu)
    visual = clip.visual
    del clip
    return visual.requires_grad_(False).eval()


def run_variant(args: argparse.Namespace, variant: str) -> Dict[str, float]:
    """Build one variant, time its forward passes, return its numbers."""
    device = bu.setup_torch(args)
    model_cfg = bu.load_model_cfg(args.config, tiny=args.tiny, quick_gelu=args.quick_gelu)
    backbone_cfg = model_cfg['backbone']
    num_mod = len(backbone_cfg.get('modalities', ('rgb', 'nir', 'tir')))
    img_size = tuple(backbone_cfg.get('img_size', (256, 128)))
    inputs, _ = bu.make_batch(args.batch_size, num_mod, img_size, device, seed=args.seed)
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    if variant == 'dmpt':
        model = bu.build_model(model_cfg, device).eval()
        if amp_dtype is not None:
            model.backbone.set_compute_dtype(amp_dtype)

        def forward() -> None:
            with torch.no_grad(), bu.amp_context(args, device):
                model(inputs, mode='tensor')

    else:
        visual = build_bare_visual(backbone_cfg).to(device)
        if amp_dtype is not None:  # the same one-time cast of the frozen tower
            visual = visual.to(amp_dtype)
        images = inputs.flatten(0, 1)

        def forward() -> None:
            with torch.no_grad(), bu.amp_context(args, device):
                visual(images)

    bu.synchronize(device)
    built_mb = bu.now_memory_mb(device)
    load_start = os.getloadavg()[0]
    times = bu.time_iterations(forward, args.steps, args.warmup, device)
    return dict(
        step_s=bu.median(times),
        peak_mb=bu.peak_memory_mb(device),
        after_build_mb=built_mb,
        step_s_all=times,
        threads=torch.get_num_threads(),
        load_avg=[load_start, os.getloadavg()[0]],
    )


def report(args: argparse.Namespace, results: Dict[str, dict], device: torch.device) -> str:
    """Add the ratios to ``frozen_backbone`` and return the printed table."""
    base = results.get('frozen_backbone')
    rows: List[List[str]] = []
    for name, res in results.items():
        if base is not None:
            res['step_ratio'] = res['step_s'] / base['step_s']
            res['peak_ratio'] = res['peak_mb'] / base['peak_mb']
        rows.append(
            [
                name,
                f'{res["step_s"]:.3f}',
                f'{res["step_ratio"]:.3f}x' if base else '-',
                f'{res["peak_mb"]:,.0f}',
                f'{res["peak_ratio"]:.2f}x' if base else '-',
            ]
        )
    mem = 'peak RSS' if device.type == 'cpu' else 'max allocated'
    header = ['variant', 's / forward', 'vs frozen_backbone', f'{mem} (MiB)', 'vs frozen_backbone']
    info = bu.machine_info(device)
    title = (
        f'infer_cost: batch {args.batch_size} samples, '
        f'{"tiny CLIP" if args.tiny else "ViT-B/16"}, amp {args.amp}, median of {args.steps} '
        f'forwards after {args.warmup} warm-up, best of {args.rounds} round(s), device '
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
