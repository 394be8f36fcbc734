"""Draw rank lists: a query's modalities and its top-k gallery samples.

Usage:
    python tools/analysis_tools/visualize_ranks.py CONFIG CHECKPOINT --out-dir DIR
        [--queries 0 5 17 | --num 8] [--topk 10] [--missing nir]
        [--cfg-options key=value ...]
    python tools/analysis_tools/visualize_ranks.py CONFIG --features FILE --out-dir DIR ...

One PNG per query (``query{index:04d}_id{pid}.png``): the query framed blue,
then its nearest gallery samples framed green (same identity) or red, each
with its modalities side by side (an absent modality is a grey box). The
gallery samples the metric removes from the query's ranking (same id and
same camera, or same id and same scene for MSVR310) are hidden, as the
legend says. Query indices count the query samples of ``test_dataloader``
in dataset order. ``--features`` reuses a file of ``extract_features.py``
(extracted with the same config) instead of running the model.
"""

import argparse
from typing import Optional, Sequence

from mmengine.config import Config, DictAction


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw ReID rank lists as PNG files')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (or use --features)')
    parser.add_argument('--features', help='a feature file written by extract_features.py')
    parser.add_argument('--out-dir', required=True, help='folder for the PNG files')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--queries', type=int, nargs='+', help='query indices to draw')
    group.add_argument('--num', type=int, default=8, help='queries drawn, spread evenly')
    parser.add_argument('--topk', type=int, default=10, help='gallery samples per query')
    parser.add_argument('--metric', choices=['cosine', 'euclidean'], help='default: the config')
    parser.add_argument('--missing', help='comma-separated modalities to leave out')
    parser.add_argument('--batch-size', type=int, help='override the test batch size')
    parser.add_argument('--num-workers', type=int, help='override the test dataloader workers')
    parser.add_argument('--device', help='e.g. cpu or cuda:0 (default: cuda when available)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config',
    )
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.features is None):
        parser.error('give either CHECKPOINT or --features FILE')
    if args.features is not None and args.missing is not None:
        parser.error('--missing applies at extraction; the feature file already fixes it')
    return args


def _metric_options(cfg: Config) -> dict:
    evaluator = cfg.get('test_evaluator') or {}
    if isinstance(evaluator, (list, tuple)):
        evaluator = evaluator[0] if evaluator else {}
    return dict(
        metric=evaluator.get('metric', 'cosine'), feat_norm=evaluator.get('feat_norm', True)
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from mmengine.registry import DefaultScope

    from mmdmpt.apis import ReIDInferencer, extract_dataset_features, load_features
    from mmdmpt.registry import DATASETS
    from mmdmpt.visualization import draw_rank_lists

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.features is not None:
        features = load_features(args.features)
    else:
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
    files = draw_rank_lists(
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
    raise SystemExit(main())
