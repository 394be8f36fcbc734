"""Size on disk of the checkpoints a config's training writes.

Builds each config's model with random weights (``pretrained=None``: the
sizes are the same as with CLIP's), gives the optimizer its Adam state (one
step on zero gradients), and saves the checkpoint the way a run does:
``SafeCheckpointHook`` (``trainable_only='auto'``) decides what is kept, as
it would with a real CLIP file (the model is told its frozen weights come
from one). Reports the file size, the tensors kept and the bytes of the
state dict and of the optimizer state.

Example::

    python benchmarks/checkpoint_size.py --out work_dirs/benchmarks/checkpoint_size.json
"""

import argparse
import os
import os.path as osp
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIGS = (
    'configs/dmpt/dmpt_vitb_rgbnt201.py',
    'configs/baselines/clip_vitb_fullft_rgbnt201.py',
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', help=f'configs (default: {DEFAULT_CONFIGS})')
    parser.add_argument(
        '--cfg-options', nargs='+', default=None, help='overrides applied to every config'
    )
    parser.add_argument(
        '--keep',
        choices=['auto', 'all'],
        default='auto',
        help="SafeCheckpointHook's choice ('auto', the default) or everything ('all')",
    )
    parser.add_argument('--out', default=None, help='write the figures as JSON to this file')
    return parser.parse_args(argv)


def _nbytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def measure(
    config: str, options: Optional[List[str]] = None, keep: str = 'auto'
) -> Dict[str, object]:
    """Save one config's checkpoint to a temporary file and measure it."""
    import torch
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope

    from mmdmpt.engine.hooks import SafeCheckpointHook
    from mmdmpt.registry import MODELS

    cfg = Config.fromfile(osp.join(ROOT, config))
    if options:
        namespace = argparse.Namespace()
        DictAction(option_strings=['--cfg-options'], dest='opts')(None, namespace, options)
        cfg.merge_from_dict(namespace.opts)
    cfg.model.backbone.pretrained = None
    if cfg.model.head.get('num_classes') == 'auto':
        cfg.model.head.num_classes = 171
    init_default_scope('mmdmpt')
    model = MODELS.build(cfg.model)
    model.backbone.pretrained = 'checkpoints/ViT-B-16.pt'  # as if built from the CLIP file
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()

    class _Runner:  # what the hook reads of a runner
        pass

    runner = _Runner()
    runner.model = model
    checkpoint = dict(
        meta=dict(epoch=1, iter=1), state_dict=model.state_dict(), optimizer=optimizer.state_dict()
    )
    trainable_only = 'auto' if keep == 'auto' else False
    SafeCheckpointHook(trainable_only=trainable_only).before_save_checkpoint(runner, checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'epoch_1.pth')
        torch.save(checkpoint, path)
        size = os.path.getsize(path)
    return dict(
        config=config,
        trainable_only=bool(checkpoint['meta'].get('trainable_only', False)),
        tensors=len(checkpoint['state_dict']),
        state_dict_mb=_nbytes(checkpoint['state_dict']) / 2**20,
        optimizer_mb=_nbytes(checkpoint['optimizer']) / 2**20,
        file_mb=size / 2**20,
        full_state_dict_mb=_nbytes(model.state_dict()) / 2**20,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    import bench_utils as bu

    rows = [measure(c, args.cfg_options, args.keep) for c in (args.configs or DEFAULT_CONFIGS)]
    header = (
        f'{"config":<50}{"kept":>16}{"tensors":>9}{"weights MB":>12}{"Adam MB":>9}{"file MB":>9}'
    )
    print(header)
    print('-' * len(header))
    for r in rows:
        kept = 'trainable only' if r['trainable_only'] else 'everything'
        print(
            f'{r["config"]:<50}{kept:>16}{r["tensors"]:>9}{r["state_dict_mb"]:>12.1f}'
            f'{r["optimizer_mb"]:>9.1f}{r["file_mb"]:>9.1f}'
        )
    if args.out:
        bu.write_json(args.out, dict(rows=rows))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
