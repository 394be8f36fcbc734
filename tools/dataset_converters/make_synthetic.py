r"""Write a synthetic multi-spectral ReID set in an official layout.

Examples::

    python tools/dataset_converters/make_synthetic.py --layout rgbnt201 --out data/RGBNT201
    python tools/dataset_converters/make_synthetic.py --layout rgbnt100 \
        --out data/RGBNT100 --num-ids 90 --train-ids 60 --seed 1
    # WMVeID863 in the flat layout ({train,query,test}/{vis,ni,th}/<id>_cam<c>_...)
    python tools/dataset_converters/make_synthetic.py --layout wmveid863 \
        --wmveid863-layout flat --out data/WMVeID863
    # a disjoint identity set (ids from 1001) to pretrain a stand-in backbone
    python tools/dataset_converters/make_synthetic.py --layout rgbnt201 \
        --out data/synthetic_pretrain --id-offset 1001

See ``mmdmpt/testing/synthetic/`` for what is drawn. The arguments are
parsed and checked before the generator (and with it torch, MMEngine and
OpenCV) is imported, so ``--help`` and argument errors answer at once.
"""

import argparse
import os
import os.path as osp
import time
from typing import List, Optional, Union

from mmdmpt.utils.cli import add_debug_argument, run_tool
from mmdmpt.utils.errors import ConfigError, MMDMPTError

# Copies of the library's names, so that argparse knows them without importing
# the generator; tests/test_tools/test_make_synthetic_cli.py checks they agree.
LAYOUTS = ('rgbnt201', 'rgbnt100', 'msvr310', 'wmveid863')
WMVEID863_LAYOUTS = ('id_folders', 'flat', 'id_folders_gallery')
#: Layouts that put one sample per (test id, camera) in the query folder.
_QUERY_PER_CAMERA = ('rgbnt100', 'wmveid863')


def _train_ids(value: str) -> Union[int, float]:
    """An int count ('24') or a float fraction ('0.6')."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected a count (e.g. 24) or a fraction in (0, 1) (e.g. 0.6), got {value!r}'
        ) from None


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line (nothing heavy is imported).

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The arguments.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='User errors (bad values, an existing --out) exit with status 2.',
    )
    parser.add_argument('--layout', required=True, choices=LAYOUTS, help='official layout to write')
    parser.add_argument(
        '--out',
        required=True,
        help='dataset root to write, e.g. data/RGBNT201; must not exist or be empty '
        'unless --overwrite',
    )
    parser.add_argument(
        '--wmveid863-layout',
        choices=WMVEID863_LAYOUTS,
        default=None,
        help='WMVeID863 variant (only with --layout wmveid863): id_folders '
        '({train,query,test}/<vid>/{vis,ni,th}), flat ({train,query,test}/{vis,ni,th}, id '
        'and camera in the name) or id_folders_gallery (gallery/ for test/) (id_folders)',
    )
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
    parser.add_argument('--quality', type=int, default=95, help='JPEG quality, 1-100 (95)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help="write into a non-empty --out, replacing the layout's split folders",
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse values the generator would refuse, and an occupied ``--out``.

    Args:
        args (argparse.Namespace): From :func:`parse_args`.

    Raises:
        ConfigError: Naming the option, the value and what is expected.
    """

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(args.num_ids is None or args.num_ids >= 2, f'--num-ids must be >= 2, got {args.num_ids}')
    if isinstance(args.train_ids, int):
        need(args.train_ids >= 1, f'--train-ids as a count must be >= 1, got {args.train_ids}')
        need(
            args.num_ids is None or args.train_ids < args.num_ids,
            f'--train-ids {args.train_ids} leaves no test id of --num-ids {args.num_ids}',
        )
    else:
        need(
            0.0 < args.train_ids < 1.0,
            f'--train-ids as a fraction must be in (0, 1), got {args.train_ids}',
        )
    spc = args.samples_per_camera
    need(spc is None or spc >= 1, f'--samples-per-camera must be >= 1, got {spc}')
    need(
        spc is None or spc >= 2 or args.layout not in _QUERY_PER_CAMERA,
        f'--samples-per-camera must be >= 2 for {args.layout} (one sample per test id and '
        f'camera goes to the query folder, the others to the gallery), got {spc}',
    )
    for option in ('height', 'width'):
        value = getattr(args, option)
        need(value is None or value >= 32, f'--{option} must be >= 32, got {value}')
    need(args.id_offset >= 0, f'--id-offset must be >= 0, got {args.id_offset}')
    need(args.family_size >= 1, f'--family-size must be >= 1, got {args.family_size}')
    need(1 <= args.quality <= 100, f'--quality must be in 1..100, got {args.quality}')
    need(
        args.wmveid863_layout is None or args.layout == 'wmveid863',
        f'--wmveid863-layout only applies to --layout wmveid863, not {args.layout}',
    )
    out = args.out
    need(bool(out), '--out is empty; expected the dataset root to write')
    need(
        not osp.exists(out) or osp.isdir(out),
        f'--out {out} exists and is not a folder; expected a new or empty folder',
    )
    if osp.isdir(out) and not args.overwrite:
        entries = sorted(os.listdir(out))
        need(
            not entries,
            f'--out {out} already exists and is not empty (it holds {entries[:5]}); pass '
            '--overwrite to write into it (the split folders of the layout are replaced) or '
            'choose a new folder',
        )


def generate(args: argparse.Namespace) -> dict:
    """Check the arguments, then write the tree.

    Args:
        args (argparse.Namespace): From :func:`parse_args`.

    Returns:
        dict: The generator's summary.

    Raises:
        ConfigError: For bad arguments or an occupied ``--out``, including
            those only the generator can judge (e.g. ``--train-ids`` leaving
            no whole family to the test split).
    """
    check_args(args)
    # imported only now: pulls torch, MMEngine and OpenCV
    from mmdmpt.testing import make_synthetic

    try:
        return make_synthetic(
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
            wmveid863_layout=args.wmveid863_layout or WMVEID863_LAYOUTS[0],
        )
    except MMDMPTError:
        raise
    except (ValueError, FileExistsError) as exc:  # the generator's argument checks
        raise ConfigError(f'make_synthetic refused the arguments: {exc}') from exc


def main(argv: Optional[List[str]] = None) -> int:
    """Write the tree and print a one-line summary.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        int: 0.
    """
    args = parse_args(argv)
    start = time.time()
    summary = generate(args)
    num_train, num_test = len(summary['train_ids']), len(summary['test_ids'])
    variant = f' ({args.wmveid863_layout})' if args.wmveid863_layout else ''
    print(
        f'{args.layout}{variant}: {num_train} train ids, {num_test} test ids, '
        f'{summary["num_samples"]} in {time.time() - start:.1f} s -> {args.out}'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main))
