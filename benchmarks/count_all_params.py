"""``tools/analysis_tools/count_params.py`` for every model config, in one table.

Builds each of ``configs/dmpt/*.py`` and ``configs/baselines/*.py`` (or the
configs given) with ``pretrained=None`` (random weights: the counts are the
same) and reports the CLIP visual tower size, the trainable parameters with
and without the ID classifier, and the DMPT budget ratio (trainable without
classifier / visual tower; target <= 6.5 % for DMPT).

Example::

    python benchmarks/count_all_params.py --out work_dirs/benchmarks/params.json
"""

import argparse
import contextlib
import gc
import glob
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BUDGET = 0.065


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'configs',
        nargs='*',
        help='config files (default: configs/dmpt/*.py and configs/baselines/*.py)',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=None,
        help='overrides applied to every config, e.g. model.backbone.img_size="(64,32)"',
    )
    parser.add_argument('--out', default=None, help='write the counts as JSON to this file')
    return parser.parse_args(argv)


def default_configs() -> List[str]:
    """``configs/dmpt/*.py`` then ``configs/baselines/*.py``, relative to the repo."""
    found = []
    for folder in ('dmpt', 'baselines'):
        found += sorted(glob.glob(osp.join(ROOT, 'configs', folder, '*.py')))
    return [osp.relpath(path, ROOT) for path in found]


def count_config(path: str, cfg_options: Optional[dict] = None) -> Dict[str, float]:
    """Build one config's model (``pretrained=None``) and count its parameters."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmdmpt.models.utils import count_parameters
    from mmdmpt.registry import MODELS

    full = path if osp.isabs(path) or osp.exists(path) else osp.join(ROOT, path)
    cfg = Config.fromfile(full)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_cfg = cfg.model.to_dict()
    model_cfg['backbone']['pretrained'] = None
    model_cfg.pop('data_preprocessor', None)
    init_default_scope('mmdmpt')
    with contextlib.redirect_stdout(sys.stderr):
        model = MODELS.build(model_cfg)
    counts = count_parameters(model)
    backbone = model.backbone
    counts['img_size'] = list(getattr(backbone, 'img_size', ()))
    counts['frozen'] = bool(getattr(backbone, 'frozen', True))
    del model
    gc.collect()
    return counts


def report(results: Dict[str, dict]) -> str:
    """The printed table."""
    header = [
        'config',
        'visual tower',
        'trainable',
        'ID classifier',
        'trainable w/o classifier',
        'ratio',
        '<= 6.5 %',
    ]
    rows = []
    for name, c in results.items():
        within = 'yes' if c['ratio'] <= BUDGET else ('n/a (full FT)' if not c['frozen'] else 'NO')
        rows.append(
            [
                name,
                f'{c["backbone_params"]:,}',
                f'{c["trainable_params"]:,}',
                f'{c["classifier_params"]:,}',
                f'{c["trainable_params_no_classifier"]:,}',
                f'{100 * c["ratio"]:.3f} %',
                within,
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [
        '| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |',
        '|' + '|'.join('-' * (w + 2) for w in widths) + '|',
    ]
    lines += ['| ' + ' | '.join(x.ljust(w) for x, w in zip(r, widths)) + ' |' for r in rows]
    title = f'count_all_params: pretrained=None, {time.strftime("%Y-%m-%d %H:%M %Z")}'
    return title + '\n' + '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    args = parse_args(argv)
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    import bench_utils as bu
    from mmengine.config import DictAction
    from mmengine.logging import MMLogger

    cfg_options = None
    if args.cfg_options:
        namespace = argparse.Namespace()
        DictAction(option_strings=['--cfg-options'], dest='cfg_options')(
            None, namespace, args.cfg_options
        )
        cfg_options = namespace.cfg_options
    MMLogger.get_instance(f'count_all_params_{os.getpid()}', log_level='WARNING')
    results = {}
    for path in args.configs or default_configs():
        results[path] = count_config(path, cfg_options)
        print(f'  {path}: done', file=sys.stderr, flush=True)
    print(report(results))
    bu.write_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
