r"""Write a synthetic multi-spectral ReID set in an official layout.

Examples::

    python tools/dataset_converters/make_synthetic.py --layout rgbnt201 --out data/RGBNT201
    python tools/dataset_converters/make_synthetic.py --layout rgbnt100 \
        --out data/RGBNT100 --num-ids 90 --train-ids 60 --seed 1
    # a disjoint identity set (ids from 1001) to pretrain a stand-in backbone
    python tools/dataset_converters/make_synthetic.py --layout rgbnt201 \
        --out data/synthetic_pretrain --id-offset 1001

See ``mmdmpt/datasets/synthetic.py`` for what is drawn.
"""

import argparse
import time
from typing import List, Optional, Union

from mmdmpt.datasets.synthetic import LAYOUTS, make_synthetic


def _train_ids(value: str) -> Union[int, float]:
    """An int count ('24') or a float fraction ('0.6')."""
    try:
        return int(value)
    except ValueError:
        return float(value)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--layout', required=True, choices=LAYOUTS, help='official layout to write')
    parser.add_argument('--out', required=True, help='dataset root to write, e.g. data/RGBNT201')
    parser.add_argument('--num-ids', type=int, default=None, help='identities in total (60)')
    parser.add_argument(
        '--train-ids',
        type=_train_ids,
        default=0.7,
        help='training identities: a count (int) or a fraction (float) (0.7)',
    )
    parser.add_argument(
        '--samples-per-camera',
        type=int,
        default=None,
        help='samples per (id, camera); per (id, scene, view) for msvr310 (5; 3 for msvr310)',
    )
    parser.add_argument('--seed', type=int, default=0, help='random seed (0)')
    parser.add_argument(
        '--height', type=int, default=None, help='image / tile height (256 persons, 128 vehicles)'
    )
    parser.add_argument(
        '--width', type=int, default=None, help='image / tile width (128 persons, 256 vehicles)'
    )
    parser.add_argument('--id-offset', type=int, default=1, help='first raw id (1)')
    parser.add_argument('--family-size', type=int, default=3, help='identities per family (3)')
    parser.add_argument('--quality', type=int, default=95, help='JPEG quality (95)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing split folders')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    start = time.time()
    summary = make_synthetic(
        args.out,
        layout=args.layout,
        num_ids=args.num_ids,
        train_ids=args.train_ids,
        samples_per_camera=args.samples_per_camera,
        seed=args.seed,
        height=args.height,
        width=args.width,
        id_offset=args.id_offset,
        family_size=args.family_size,
        quality=args.quality,
        overwrite=args.overwrite,
    )
    num_train, num_test = len(summary['train_ids']), len(summary['test_ids'])
    print(
        f'{args.layout}: {num_train} train ids, {num_test} test ids, '
        f'{summary["num_samples"]} in {time.time() - start:.1f} s -> {args.out}'
    )
    return summary


if __name__ == '__main__':
    main()
