"""Draw the loss and metric curves of a run from its scalar log into a PNG.

Usage:
    python tools/analysis_tools/plot_curves.py WORK_DIR_OR_SCALARS_JSON --out curves.png
        [--keys loss reid/mAP ...] [--title TEXT] [--debug]

The input is a work dir (its latest ``<timestamp>/vis_data/scalars.json``),
a run folder or a ``scalars.json`` written by MMEngine's ``LocalVisBackend``.
By default every key containing ``loss`` is drawn plus ``reid/mAP`` and
``reid/Rank-1``; losses against the iteration, metrics against the epoch.
A mistake (no scalar log, an unreadable line, a key the log lacks, an output
format matplotlib cannot write) is printed as one message with exit status 2;
``--debug`` shows its traceback.
"""

import argparse
from typing import Optional, Sequence

from mmdmpt.utils.cli import add_debug_argument, run_tool


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Plot loss and metric curves of a run')
    parser.add_argument('path', help='work dir, run folder or vis_data/scalars.json')
    parser.add_argument('--out', required=True, help='output picture, e.g. curves.png')
    parser.add_argument(
        '--keys',
        nargs='+',
        help='keys to draw (default: every key containing "loss", reid/mAP, reid/Rank-1)',
    )
    parser.add_argument('--title', help='figure title (default: the log path)')
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from mmdmpt.visualization.curves import plot_curves

    keys = plot_curves(args.path, args.out, keys=args.keys, title=args.title)
    print(f'Drew {", ".join(keys)} into {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='plot_curves.py'))
