"""Search a gallery of your own multi-modal images; judge "same identity or not".

Usage:
    python tools/search.py CONFIG CHECKPOINT --gallery DIR_OR_CSV
        --query rgb=q_rgb.jpg depth=q_depth.png [--query rgb=other.jpg ...]
        [--topk 10] [--threshold T | --calibration FILE] [--out-dir DIR]
        [--cache-dir DIR | --no-cache] [--backend torch|faiss] [--index flat|ivf|hnsw]
        [--nlist N] [--nprobe N] [--ef-search N]
        [--gallery-root DIR] [--modality-dirs rgb=RGB depth=DEPTH] [--name-pattern REGEX]
        [--batch-size N] [--device cpu] [--no-draw] [--cfg-options key=value ...] [--debug]

The gallery is a folder with one folder per modality (the files of one sample
share their name without the extension; a missing file is a modality the
sample lacks) or an annotation CSV with one path column per modality
(relative to the CSV's folder or --gallery-root). Each ``--query`` gives one
sample's images as ``modality=path`` pairs, any subset of the config's
modalities.

The gallery features are extracted once and cached (``--cache-dir``, default
``work_dirs/gallery_cache``), keyed by the checkpoint's content, the model
and pipeline settings and every gallery file's path, size and time; they are
read back while nothing changed. The results are printed, written to
``<out-dir>/results.json`` and drawn as rank lists (``<out-dir>/query000.png``
...). With ``--threshold`` (a distance) or ``--calibration`` (a file of
``tools/analysis_tools/calibrate_threshold.py``) each result is judged the
same identity when its distance is at most the threshold.

``--backend faiss`` searches with FAISS (``faiss-cpu``): ``--index flat``
gives exactly the results of the default exact search, ``ivf`` and ``hnsw``
are approximate (for very large galleries; see docs/search.md).

A mistake is printed as one message (exit status 2); ``--debug`` shows its
traceback.
"""

import argparse
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

from mmdmpt.utils.cli import add_debug_argument, check_device, positive_int, run_tool
from mmdmpt.utils.errors import ConfigError, DataNotFoundError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Search a gallery of your own multi-modal images')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='checkpoint file (full or trainable-only)')
    parser.add_argument('--gallery', required=True, help='gallery folder or annotation .csv')
    parser.add_argument(
        '--query',
        nargs='+',
        action='append',
        required=True,
        metavar='MODALITY=PATH',
        help='one query sample as modality=path pairs (repeat --query for more queries)',
    )
    parser.add_argument('--topk', type=positive_int, default=10, help='results per query')
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument('--threshold', type=float, help='match threshold (a distance)')
    decision.add_argument('--calibration', help='a calibration JSON of calibrate_threshold.py')
    parser.add_argument(
        '--out-dir', help='results.json and pictures (default work_dirs/search/<time>)'
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        '--cache-dir', help='gallery feature cache (default work_dirs/gallery_cache)'
    )
    cache.add_argument('--no-cache', action='store_true', help='always extract the gallery')
    parser.add_argument('--backend', choices=['torch', 'faiss'], default='torch')
    parser.add_argument('--index', choices=['flat', 'ivf', 'hnsw'], default='flat')
    parser.add_argument('--nlist', type=positive_int, help='IVF lists (--index ivf)')
    parser.add_argument('--nprobe', type=positive_int, help='IVF lists searched (--index ivf)')
    parser.add_argument('--ef-search', type=positive_int, help='HNSW search depth (--index hnsw)')
    parser.add_argument('--gallery-root', help="root of the CSV's relative paths")
    parser.add_argument(
        '--modality-dirs', nargs='+', metavar='MODALITY=FOLDER', help='folder of each modality'
    )
    parser.add_argument('--name-pattern', help='regular expression reading (?P<pid>..) from names')
    parser.add_argument('--batch-size', type=positive_int, help='extraction batch size')
    parser.add_argument('--device', help='e.g. cpu or cuda:0 (default: cuda when available)')
    parser.add_argument('--no-draw', action='store_true', help='do not draw rank lists')
    parser.add_argument(
        '--cfg-options', nargs='+', metavar='KEY=VALUE', help='override settings of the config'
    )
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.backend == 'torch' and args.index != 'flat':
        parser.error(f'--index {args.index} needs --backend faiss')
    return args


def parse_pairs(items: Sequence[str], option: str) -> Dict[str, str]:
    """``['rgb=a.jpg', 'depth=b.png']`` -> ``{'rgb': 'a.jpg', 'depth': 'b.png'}``."""
    out: Dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key or not value:
            raise ConfigError(f'{option} {item!r}: expected MODALITY=PATH, e.g. rgb=query.jpg')
        if key in out:
            raise ConfigError(f'{option}: modality {key!r} given twice')
        out[key] = value
    return out


def index_options(args: argparse.Namespace) -> dict:
    """The FAISS index options given on the command line."""
    opts = {}
    if args.index == 'ivf':
        if args.nlist:
            opts['nlist'] = args.nlist
        if args.nprobe:
            opts['nprobe'] = args.nprobe
    elif args.index == 'hnsw' and args.ef_search:
        opts['ef_search'] = args.ef_search
    unused = [
        name
        for name, value, index in (
            ('--nlist', args.nlist, 'ivf'),
            ('--nprobe', args.nprobe, 'ivf'),
            ('--ef-search', args.ef_search, 'hnsw'),
        )
        if value and args.index != index
    ]
    if unused:
        raise ConfigError(f'{", ".join(unused)} do not apply to --index {args.index}')
    return opts


def format_results(results: List[dict], modalities: Sequence[str]) -> str:
    """The results as text, one block per query."""
    lines = []
    for n, found in enumerate(results):
        given = ', '.join(f'{m}={p}' for m, p in found['query'].items() if p)
        lines.append(f'query {n} ({"+".join(found["modalities"])}): {given}')
        lines.append(f'  {"rank":>4}  {"distance":>9}  {"same id?":>8}  {"id":>5}  images')
        for entry in found['results']:
            same = {None: '-', True: 'yes', False: 'no'}[entry['same_identity']]
            pid = '?' if entry['pid'] is None else str(entry['pid'])
            paths = ' | '.join(entry['img_paths'][m] or f'({m} absent)' for m in modalities)
            lines.append(
                f'  {entry["rank"]:>4}  {entry["distance"]:>9.4f}  {same:>8}  {pid:>5}  {paths}'
            )
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    queries = [parse_pairs(items, '--query') for items in args.query]
    for n, query in enumerate(queries):
        for modality, path in query.items():
            if not osp.isfile(path):
                raise DataNotFoundError(f'--query {n + 1}: {modality} image not found: {path}')
    if not osp.exists(args.gallery):
        raise DataNotFoundError(f'--gallery {args.gallery}: no such folder or file')
    dirs = parse_pairs(args.modality_dirs, '--modality-dirs') if args.modality_dirs else None
    options = index_options(args)
    out_dir = args.out_dir or osp.join('work_dirs', 'search', time.strftime('%Y%m%d_%H%M%S'))
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise ConfigError(f'--out-dir {out_dir} is a file; expected a folder')

    from mmdmpt.engine.config_check import check_sections
    from mmdmpt.engine.launch import load_config_with_options
    from mmdmpt.utils.checkpoint import check_checkpoint_file

    check_checkpoint_file(args.checkpoint)  # before anything is read or built
    cfg = load_config_with_options(args.config, args.cfg_options)
    check_sections(cfg, ('model', 'data_preprocessor', 'test_evaluator'))
    check_device(args.device)

    from mmdmpt.apis import DEFAULT_CACHE_DIR, ReIDGallery, config_modalities

    modalities = config_modalities(cfg)
    for n, query in enumerate(queries):
        unknown = [m for m in query if m not in modalities]
        if unknown:
            raise ConfigError(
                f'--query {n + 1}: unknown modality {unknown}; the model takes {list(modalities)} '
                '(any subset)'
            )

    threshold = args.calibration if args.calibration is not None else args.threshold
    gallery = ReIDGallery(
        cfg,
        args.checkpoint,
        args.gallery,
        data_root=args.gallery_root,
        modality_dirs=dirs,
        name_pattern=args.name_pattern,
        cache_dir=None if args.no_cache else (args.cache_dir or DEFAULT_CACHE_DIR),
        threshold=threshold,
        backend=args.backend,
        index=args.index,
        index_options=options,
        device=args.device,
        batch_size=args.batch_size,
    )
    info = gallery.cache_info
    how = 'extracted' + (f', cached in {info["cache_file"]}' if info['cache_file'] else '')
    if info['reused']:
        how = f'read from the cache {info["cache_file"]}'
    print(
        f'Gallery: {gallery.num_samples} samples ({", ".join(gallery.modalities)}) from '
        f'{args.gallery}; features {how}'
    )
    if gallery.threshold is not None:
        source = 'given'
        if gallery.calibration is not None:
            cal = gallery.calibration
            source = (
                f'{args.calibration}: FMR {100 * cal["fmr"]:.2f} % and TMR {100 * cal["tmr"]:.2f} '
                f'% on split {cal.get("split", "?")!r}'
            )
        print(f'Threshold: {gallery.threshold:.4f} {gallery.metric} distance ({source})')
    results = gallery.search(queries, k=args.topk)
    print(format_results(results, gallery.modalities))
    os.makedirs(out_dir, exist_ok=True)
    out_file = osp.join(out_dir, 'results.json')
    with open(out_file, 'w') as f:
        json.dump(
            dict(
                config=args.config,
                checkpoint=args.checkpoint,
                gallery=args.gallery,
                num_gallery=gallery.num_samples,
                modalities=list(gallery.modalities),
                metric=gallery.metric,
                threshold=gallery.threshold,
                backend=args.backend,
                index=args.index,
                cache=info,
                queries=results,
            ),
            f,
            indent=1,
        )
    print(f'Wrote {out_file}')
    if not args.no_draw:
        for path in gallery.draw(queries, results, out_dir):
            print(f'Wrote {path}')
    return 0


if __name__ == '__main__':
    raise SystemExit(run_tool(main, tool='search.py'))
