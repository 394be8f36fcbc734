"""Count the parameters of a model config: backbone, trainable, budget ratio.

Usage:
    python tools/analysis_tools/count_params.py CONFIG [--json]
        [--cfg-options model.backbone.pretrained=None ...]

``ratio`` is the trainable parameter count without the ID classifier divided
by the parameter count of the CLIP visual tower (the DMPT budget). When the
config's pretrained file is missing the model is built with random weights
(the counts do not depend on them) and a note goes to stderr.
"""

import argparse
import contextlib
import json
import os.path as osp
import sys
import uuid
from typing import Optional, Sequence

from mmengine.config import Config, DictAction


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Count model parameters')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. model.backbone.pretrained=None',
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    backbone = cfg.model.get('backbone', {})
    pretrained = backbone.get('pretrained')
    if pretrained is not None and not osp.isfile(pretrained):
        sys.stderr.write(
            f'count_params: pretrained file {pretrained} not found; building with '
            'pretrained=None (random weights; the counts are the same).\n'
        )
        backbone['pretrained'] = None

    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    from mmdmpt.models.utils import count_parameters
    from mmdmpt.registry import MODELS

    # Keep stdout for the result: the build log (warnings only) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        MMLogger.get_instance(f'count_params_{uuid.uuid4().hex}', log_level='WARNING')
        init_default_scope('mmdmpt')
        model = MODELS.build(cfg.model)
    counts = count_parameters(model)
    if args.json:
        print(json.dumps(counts))
        return 0
    rows = [
        ('CLIP visual tower (backbone_params)', f'{counts["backbone_params"]:,}'),
        ('all parameters', f'{counts["total_params"]:,}'),
        ('trainable', f'{counts["trainable_params"]:,}'),
        ('  of which ID classifier', f'{counts["classifier_params"]:,}'),
        ('trainable without classifier', f'{counts["trainable_params_no_classifier"]:,}'),
        ('ratio (no classifier / visual tower)', f'{100 * counts["ratio"]:.3f} %'),
    ]
    width = max(len(name) for name, _ in rows)
    print(f'Parameters of {args.config}')
    for name, value in rows:
        print(f'{name:<{width}}  {value:>14}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
