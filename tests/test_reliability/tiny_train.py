"""Build the tiny DMPT config as ``tools/train.py`` does, in-process (not a test module).

Loaded with ``load_tiny_train()`` from the tests of guarantees 3 and 6: the config is read,
the command line (``--cfg-options``, ``--amp``) merged by ``tools/train.py``'s own
functions, and the Runner built from it, so a bad value reaches the code exactly as a
user's would.
"""

import sys
import uuid
from pathlib import Path
from typing import List, Sequence

from mmengine.config import Config
from mmengine.registry import RUNNERS, init_default_scope

from mmdmpt.testing import load_script, make_synthetic

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'tests' / 'data' / 'tiny_dmpt_rgbnt201.py'


def train_tool():
    """``tools/train.py`` as a module."""
    return load_script(ROOT / 'tools' / 'train.py', 'mmdmpt_tools_train')


def make_tree(root: str) -> str:
    """An RGBNT201 tree: 6 train ids (whole families) x 8 samples (4 cameras x 2)."""
    make_synthetic(
        root, layout='rgbnt201', num_ids=9, train_ids=4, samples_per_camera=2, height=64, width=32
    )
    return root


def build_cfg(
    tree: str, work_dir: str, options: Sequence[str] = (), flags: Sequence[str] = ()
) -> Config:
    """The config ``tools/train.py CONFIG --work-dir W [flags] --cfg-options ...`` trains.

    Args:
        tree (str): The data root given to the three dataloaders.
        work_dir (str): The work dir.
        options (Sequence[str]): More ``key=value`` options.
        flags (Sequence[str]): Command-line flags such as ``'--amp'``.

    Returns:
        Config: The merged config (``tools/train.py``'s ``merge_args``).
    """
    tool = train_tool()
    data = [f'{k}_dataloader.dataset.data_root={tree}' for k in ('train', 'val', 'test')]
    argv: List[str] = ['tools/train.py', str(CONFIG), '--work-dir', str(work_dir), *flags]
    argv += ['--cfg-options', *data, f'experiment_name=tiny_{uuid.uuid4().hex}', *options]
    saved = sys.argv
    sys.argv = argv
    try:
        args = tool.parse_args()
    finally:
        sys.argv = saved
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    return tool.merge_args(cfg, args)


def build_runner(cfg: Config):
    """The Runner ``tools/train.py`` builds (``missing_inputs`` is checked by the caller)."""
    init_default_scope(cfg.get('default_scope', 'mmdmpt'))
    return RUNNERS.build(cfg)
