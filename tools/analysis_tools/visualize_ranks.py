"""Draw rank lists: a query's modalities and its top-k gallery samples.

Usage:
    python tools/analysis_tools/visualize_ranks.py CONFIG CHECKPOINT --out-dir DIR
        [--queries 0 5 17 | --num 8] [--topk 10] [--missing nir]
        [--data-root DIR] [--cfg-options key=value ...] [--debug]
    python tools/analysis_tools/visualize_ranks.py CONFIG --features FILE --out-dir DIR ...

One PNG per query (``query{index:04d}_id{pid}.png``): the query framed blue,
then its nearest gallery samples framed green (same identity) or red, each
with its modalities side by side (an absent modality is a grey box). The
gallery samples the metric removes from the query's ranking (same id and
same camera, or same id and same scene for MSVR310) are hidden, as the
legend says. Query indices count the query samples of ``test_dataloader``
in dataset order. ``--features`` reuses a file of ``extract_features.py``
(extracted with the same config) instead of running the model.

The output folder, the checkpoint or feature file and the config are checked
before the model is built; a mistake is printed as one message with exit
status 2 (``--debug`` shows its traceback).
"""

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmdmpt.utils.cli import (
    add_debug_argument,
    check_device,
    non_negative_int,
    positive_int,
    run_tool,
)
from mmdmpt.utils.errors import ConfigError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw ReID rank lists as PNG files')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (or use --features)')
    parser.add_argument('--features', help='a feature file written by extract_features.py')
    parser.add_argument('--out-dir', required=True, help='folder for the PNG files')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--queries', type=int, nargs='+', help='query indices to draw')
    group.add_argument('--num', type=int, default=8, help='queries drawn, spread evenly')
    parser.add_argument('--topk', type=positive_int, default=10, help='gallery samples per query')
    parser.add_argument('--metric', choices=['cosine', 'euclidean'], help='default: the config')
    parser.add_argument('--missing', help='comma-separated modalities to leave out')
    parser.add_argument('--batch-size', type=positive_int, help='override the test batch size')
    parser.add_argument(
        '--num-workers', type=non_negative_int, help='override the test dataloader workers'
    )
    parser.add_argument('--device', help='e.g. cpu or cuda:0 (default: cuda when available)')
    parser.add_argument('--data-root', help="dataset root (the config's data_root)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        metavar='KEY=VALUE',
        help='override settings of the config',
    )
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.features is None):
        parser.error('give either CHECKPOINT or --features FILE')
    if args.features is not None and args.missing is not None:
        parser.error('--missing applies at extraction; the feature file already fixes it')
    return args


def check_out_dir(out_dir: str) -> None:
    """Refuse an ``--out-dir`` that is a file, or lies under one."""
    path = osp.abspath(out_dir)
    while path and not osp.exists(path):
        parent = osp.dirname(path)
        if parent == path:
            break
        path = parent
    if osp.exists(path) and not osp.isdir(path):
        where = '' if path == osp.abspath(out_dir) else f' ({path} is a file)'
        raise ConfigError(
            f'--out-dir {out_dir} is not a folder{where}; expected a folder for the PNG files'
        )


def _metric_options(cfg) -> dict:
    evaluator = cfg.get('test_evaluator') or {}
    if isinstance(evaluator, (list, tuple)):
        evaluator = evaluator[0] if evaluator else {}
    return dict(
        metric=evaluator.get('metric', 'cosine'), feat_norm=evaluator.get('feat_norm', True)
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out_dir)
    from mmdmpt.engine.config_check import check_sections
    from mmdmpt.engine.launch import (
        load_config_with_options,
        missing_data_roots,
        missing_inputs_error,
    )

    if args.checkpoint is not None:
        from mmdmpt.utils.checkpoint import check_checkpoint_file

        check_checkpoint_file(args.checkpoint)  # before anything is built
    cfg = load_config_with_options(args.config, args.cfg_options, args.data_root)
    if not cfg.get('test_dataloader'):
        raise ConfigError(f'{args.config} has no test_dataloader: no samples to draw.')
    check_sections(cfg)
    problems = missing_data_roots(cfg, ['test_dataloader'])
    if problems:
        raise missing_inputs_error(problems, 'drawing rank lists')

    from mmengine.registry import DefaultScope

    from mmdmpt.apis import (
        ReIDInferencer,
        extract_dataset_features,
        load_features,
        write_rank_lists,
    )
    from mmdmpt.registry import DATASETS

    if args.features is not None:
        features = load_features(args.features)
    else:
        check_device(args.device)
        inferencer = ReIDInferencer(cfg, args.checkpoint, device=args.device)
        features = extract_dataset_features(
            inferencer,
            missing=args.missing,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmdmpt'):
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
    options = _metric_options(cfg)
    if args.metric:
        options['metric'] = args.metric
    files = write_rank_lists(
        features,
        args.out_dir,
        dataset=dataset,
        query_indices=args.queries,
        num_queries=args.num,
        topk=args.topk,
        **options,
    )
    for path in files:
        print(path)
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='visualize_ranks.py'))
