"""Inference speed of the exported ONNX file (onnxruntime) vs PyTorch eager, on the CPU.

One process builds the DMPT model of ``--config`` (``pretrained=None``: random
weights cost the same; QuickGELU as with OpenAI's weights), exports it with
``mmdmpt.apis.export.export_onnx`` (dynamic batch) into a temporary folder and
times, for each batch size of ``--batch-sizes``, on the same random 0-255
images with every modality present:

* ``pytorch``: the test loop's path, ``model.data_preprocessor`` then
  ``model(inputs, data_samples, mode='tensor')`` under ``torch.no_grad()``,
  with torch's default CPU threads (or ``--threads``);
* ``onnxruntime``: ``session.run`` on ``images`` / ``modality_mask`` with the
  CPU execution provider and its default threads (or ``--ort-threads``).

Each time is the median of ``--steps`` calls after ``--warmup``; with
``--rounds R`` both backends alternate R times and the fastest round counts
(other processes can only add time). The outputs of both are compared (max
abs difference, printed) so that the two really compute the same feature.
The load average before and after is printed with the table: numbers taken
while other jobs use the cores are not comparable with quiet ones.

Examples::

    python benchmarks/onnx_infer.py --rounds 3 --out work_dirs/benchmarks/onnx_infer.json
    python benchmarks/onnx_infer.py --tiny --steps 1 --warmup 0   # smoke test
"""

import argparse
import os
import os.path as osp
import sys
import tempfile
import time
from typing import Dict, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import bench_utils as bu  # noqa: E402
import torch  # noqa: E402

BACKENDS = ('pytorch', 'onnxruntime')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--config', default='configs/dmpt/dmpt_vitb_rgbnt201.py', help='DMPT config'
    )
    parser.add_argument(
        '--batch-sizes', type=int, nargs='+', default=[1, 8], help='samples per call (1 8)'
    )
    parser.add_argument('--steps', type=int, default=5, help='timed calls per batch size (5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls first (2)')
    parser.add_argument(
        '--rounds', type=int, default=1, help='alternate the backends this many times (1)'
    )
    parser.add_argument(
        '--threads', type=int, default=None, help='torch CPU threads (default: torch default)'
    )
    parser.add_argument(
        '--ort-threads',
        type=int,
        default=None,
        help='onnxruntime intra-op threads (default: onnxruntime default)',
    )
    parser.add_argument(
        '--quick-gelu',
        default='true',
        choices=['true', 'false', 'config'],
        help="MLP activation ('true' as with OpenAI's weights, default)",
    )
    parser.add_argument('--opset', type=int, default=18, help='ONNX operator set (18)')
    parser.add_argument(
        '--tiny',
        action='store_true',
        help='a 4-layer, width-64 CLIP at 64x32 (smoke tests; numbers meaningless)',
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the results as JSON to this file')
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> torch.nn.Module:
    """The config's ``MultiModalReID`` with its data preprocessor, random weights, eval mode."""
    from mmengine.config import Config

    model_cfg = bu.load_model_cfg(args.config, tiny=args.tiny, quick_gelu=args.quick_gelu)
    path = args.config if osp.exists(args.config) else osp.join(bu.ROOT, args.config)
    preprocessor = Config.fromfile(path).get('data_preprocessor')
    if preprocessor is not None:
        model_cfg['data_preprocessor'] = preprocessor.to_dict()
    return bu.build_model(model_cfg, torch.device('cpu')).eval()


def run(args: argparse.Namespace) -> Dict[str, object]:
    """Export, time both backends per batch size, return the numbers."""
    from mmdmpt.apis.export import eager_features, export_onnx, onnx_features, onnx_session

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args)
    num_mod = len(model.backbone.modalities)
    height, width = model.backbone.img_size
    results: Dict[str, object] = dict(batches={})
    with tempfile.TemporaryDirectory(prefix='onnx_infer_') as tmp:
        path = osp.join(tmp, 'model.onnx')
        info = export_onnx(model, path, opset=args.opset, dynamic_batch=True)
        session = onnx_session(path, args.ort_threads)
        results.update(
            export_s=info['export_s'],
            onnx_mb=info['size_mb'],
            ort_threads=args.ort_threads or 'default',
            torch_threads=torch.get_num_threads(),
            load_avg_start=os.getloadavg()[0],
        )
        gen = torch.Generator().manual_seed(args.seed)
        for batch in args.batch_sizes:
            images = torch.rand(batch, num_mod, 3, height, width, generator=gen) * 255.0
            mask = torch.ones(batch, num_mod, dtype=torch.bool)
            calls = {
                'pytorch': lambda x=images, m=mask: eager_features(model, x, m),
                'onnxruntime': lambda x=images, m=mask: onnx_features(session, x, m),
            }
            diff = float((calls['pytorch']() - calls['onnxruntime']()).abs().max())
            per_round = {name: [] for name in BACKENDS}
            for _ in range(max(1, args.rounds)):
                for name in BACKENDS:
                    times = bu.time_iterations(
                        calls[name], args.steps, args.warmup, torch.device('cpu')
                    )
                    per_round[name].append(bu.median(times))
            entry = dict(max_abs_diff=diff)
            for name in BACKENDS:
                step_s = min(per_round[name])
                entry[name] = dict(
                    step_s=step_s, samples_per_s=batch / step_s, step_s_rounds=per_round[name]
                )
            entry['ratio'] = (
                entry['onnxruntime']['samples_per_s'] / entry['pytorch']['samples_per_s']
            )
            results['batches'][str(batch)] = entry
        results['load_avg_end'] = os.getloadavg()[0]
    return results


def report(args: argparse.Namespace, results: Dict[str, object]) -> str:
    """The printed table."""
    rows = []
    for batch, entry in results['batches'].items():
        rows.append(
            [
                batch,
                f'{entry["pytorch"]["samples_per_s"]:.2f}',
                f'{entry["onnxruntime"]["samples_per_s"]:.2f}',
                f'{entry["ratio"]:.2f}x',
                f'{entry["max_abs_diff"]:.1e}',
            ]
        )
    header = [
        'batch',
        'PyTorch eager (samples/s)',
        'onnxruntime (samples/s)',
        'onnxruntime / PyTorch',
        'max abs diff',
    ]
    info = bu.machine_info(torch.device('cpu'))
    import onnxruntime

    title = (
        f'onnx_infer: {"tiny CLIP" if args.tiny else "ViT-B/16"} DMPT, all modalities present, '
        f'median of {args.steps} calls after {args.warmup} warm-up, best of {args.rounds} '
        f'round(s); torch {info["torch"]} ({results["torch_threads"]} threads), onnxruntime '
        f'{onnxruntime.__version__} ({results["ort_threads"]} threads), {info["cpu_count"]} '
        f'CPUs, load average {results["load_avg_start"]:.2f} -> {results["load_avg_end"]:.2f}, '
        f'{info["date"]}; export {results["export_s"]:.0f} s, {results["onnx_mb"]:.0f} MiB'
    )
    return title + '\n' + bu.format_table(header, rows)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    results['total_s'] = time.perf_counter() - start
    print(report(args, results))
    bu.write_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
