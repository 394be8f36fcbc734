"""Training-pipeline throughput per data-loading worker, for every dataset layout.

For each layout a small synthetic tree is written with
:func:`mmdmpt.testing.make_synthetic` (the generator behind
``tools/dataset_converters/make_synthetic.py``) into a temporary folder (or
``--work-dir``), the training dataset is built from
``configs/_base_/datasets/<layout>_*.py`` (its ``train_dataloader.dataset``
with ``data_root`` pointed at the tree, i.e. the real train pipeline:
decode M images, aligned resize / flip / pad-crop / erasing, packing), and
``dataset[i]`` is called in a loop in this process, as one DataLoader worker
does. Like a worker under MMEngine (``env_cfg.mp_cfg.opencv_num_threads=0``
and PyTorch's one thread per worker) the loop runs with one torch thread and
OpenCV threading off (``--threads`` changes both).

The synthetic images have the official sizes (persons 256x128, vehicle tiles
128x256, RGBNT100 strips 128x768) and are JPEG quality 95.

Example::

    python benchmarks/data_throughput.py --out work_dirs/benchmarks/data_throughput.json
"""

import argparse
import glob
import os
import os.path as osp
import platform
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LAYOUTS = ('rgbnt201', 'rgbnt100', 'msvr310', 'wmveid863')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--layouts', nargs='+', default=list(LAYOUTS), choices=LAYOUTS, help='layouts to run'
    )
    parser.add_argument(
        '--samples', type=int, default=400, help='timed dataset[i] calls per layout (400)'
    )
    parser.add_argument('--warmup', type=int, default=20, help='untimed calls first (20)')
    parser.add_argument(
        '--num-ids', type=int, default=12, help='identities of each synthetic tree (12)'
    )
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch threads; OpenCV threading is off for 1 (a DataLoader worker) (1)',
    )
    parser.add_argument(
        '--work-dir', default=None, help='write the synthetic trees here (default: a temp dir)'
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the results as JSON to this file')
    return parser.parse_args(argv)


def dataset_config(layout: str) -> str:
    """The ``configs/_base_/datasets/<layout>_*.py`` file of a layout."""
    found = sorted(glob.glob(osp.join(ROOT, 'configs', '_base_', 'datasets', f'{layout}_*.py')))
    if not found:
        raise FileNotFoundError(f'no configs/_base_/datasets/{layout}_*.py')
    return found[0]


def build_train_dataset(layout: str, data_root: str):
    """The training dataset of a layout's base config, rooted at ``data_root``."""
    from mmengine.registry import init_default_scope

    from mmdmpt.engine.launch import load_config
    from mmdmpt.registry import DATASETS

    cfg = load_config(dataset_config(layout))
    ds_cfg = cfg.train_dataloader.dataset.to_dict()
    ds_cfg['data_root'] = data_root
    init_default_scope('mmdmpt')
    return DATASETS.build(ds_cfg)


def measure_layout(args: argparse.Namespace, layout: str, root: str) -> Dict[str, float]:
    """Write a tree, build the train dataset and time ``dataset[i]``."""
    from mmdmpt.testing import make_synthetic

    tree = osp.join(root, layout)
    start = time.perf_counter()
    make_synthetic(tree, layout=layout, num_ids=args.num_ids, seed=args.seed, overwrite=True)
    generate_s = time.perf_counter() - start
    dataset = build_train_dataset(layout, tree)
    num = len(dataset)
    if num == 0:
        raise RuntimeError(f'{layout}: the synthetic train split is empty')
    first = dataset[0]
    inputs = first['inputs']
    for i in range(args.warmup):
        dataset[i % num]
    times: List[float] = []
    start = time.perf_counter()
    for i in range(args.samples):
        tick = time.perf_counter()
        dataset[(args.warmup + i) % num]
        times.append(time.perf_counter() - tick)
    total = time.perf_counter() - start
    times.sort()
    return dict(
        samples_per_s=args.samples / total,
        ms_per_sample=1e3 * total / args.samples,
        p90_ms=1e3 * times[int(0.9 * (len(times) - 1))],
        train_samples=num,
        modalities=int(inputs.shape[0]),
        output_shape=list(inputs.shape),
        generate_s=generate_s,
    )


def report(args: argparse.Namespace, results: Dict[str, dict]) -> str:
    """The printed table."""
    header = ['layout', 'samples / s', 'ms / sample', 'p90 ms', 'output (M, C, H, W)', 'train set']
    rows = [
        [
            layout,
            f'{res["samples_per_s"]:.1f}',
            f'{res["ms_per_sample"]:.2f}',
            f'{res["p90_ms"]:.2f}',
            'x'.join(str(x) for x in res['output_shape']),
            str(res['train_samples']),
        ]
        for layout, res in results.items()
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [
        '| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |',
        '|' + '|'.join('-' * (w + 2) for w in widths) + '|',
    ]
    lines += ['| ' + ' | '.join(x.ljust(w) for x, w in zip(r, widths)) + ' |' for r in rows]
    title = (
        f'data_throughput: train pipeline, one process (one worker), {args.threads} torch '
        f'thread(s), {args.samples} samples after {args.warmup} warm-up, '
        f'{platform.processor() or platform.machine()}, {time.strftime("%Y-%m-%d %H:%M %Z")}'
    )
    return title + '\n' + '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    args = parse_args(argv)
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    import bench_utils as bu
    import cv2
    import torch
    from mmengine.logging import MMLogger

    MMLogger.get_instance(f'data_throughput_{os.getpid()}', log_level='WARNING')
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(0 if args.threads == 1 else args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work_dir or tmp
        for layout in args.layouts:
            results[layout] = measure_layout(args, layout, root)
            print(f'  {layout}: done', file=sys.stderr, flush=True)
    print(report(args, results))
    bu.write_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
