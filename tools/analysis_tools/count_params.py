"""Count the parameters of a model config: backbone, trainable, budget ratio.

Usage:
    python tools/analysis_tools/count_params.py CONFIG [--json]
        [--cfg-options model.backbone.pretrained=None ...] [--debug]

``ratio`` is the trainable parameter count without the ID classifier divided
by the parameter count of the CLIP visual tower (the DMPT budget). When the
config's pretrained file is missing the model is built with random weights
(the counts do not depend on them) and a note goes to stderr. A mistake (a
missing config, an unknown ``--cfg-options`` key, a bad model setting) is
printed as one message with exit status 2; ``--debug`` shows its traceback.
"""

import argparse
import contextlib
import json
import os.path as osp
import sys
import uuid
from typing import Optional, Sequence

from mmdmpt.utils.cli import add_debug_argument, run_tool
from mmdmpt.utils.errors import ConfigError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Count model parameters')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument(
        '--num-classes',
        type=int,
        default=None,
        help="ID classifier size when the config says num_classes='auto' (default: the "
        "training set's identities, when its data_root exists)",
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        metavar='KEY=VALUE',
        help='override settings of the config, e.g. model.backbone.pretrained=None',
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from mmdmpt.engine.launch import load_config_with_options

    cfg = load_config_with_options(args.config, args.cfg_options)
    if not isinstance(cfg.get('model'), dict):
        raise ConfigError(f'{args.config} has no model dict: nothing to count.')
    from mmengine.registry import init_default_scope

    from mmdmpt.engine.config_check import check_config_keys

    init_default_scope('mmdmpt')
    check_config_keys(dict(model=cfg.model))  # misspelt arguments, with the closest name
    head = cfg.model.get('head') or {}
    if head.get('num_classes') == 'auto':
        if args.num_classes is not None:
            head['num_classes'] = args.num_classes
        else:
            from mmdmpt.engine.launch import missing_data_roots
            from mmdmpt.engine.prepare import resolve_num_classes

            if not cfg.get('train_dataloader') or missing_data_roots(cfg, ['train_dataloader']):
                raise ConfigError(
                    "model.head.num_classes='auto' follows the training set, whose data_root "
                    'is missing here: pass --num-classes N to count the ID classifier (the '
                    'DMPT budget ratio does not include it).'
                )
            resolve_num_classes(cfg)
    backbone = cfg.model.get('backbone', {})
    pretrained = backbone.get('pretrained')
    if pretrained is not None and not osp.isfile(pretrained):
        sys.stderr.write(
            f'count_params: pretrained file {pretrained} not found; building with '
            'pretrained=None (random weights; the counts are the same).\n'
        )
        backbone['pretrained'] = None

    from mmengine.logging import MMLogger

    from mmdmpt.models.utils import count_parameters
    from mmdmpt.registry import MODELS

    # Keep stdout for the result: the build log (warnings only) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        MMLogger.get_instance(f'count_params_{uuid.uuid4().hex}', log_level='WARNING')
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
    raise SystemExit(run_tool(main, tool='count_params.py'))
