"""``tools/train.py --compile``: the backbone's torch_compile switch, set from the command line."""

from pathlib import Path

import pytest
from mmengine.config import Config

from mmdmpt.testing import load_script
from mmdmpt.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'tests' / 'data' / 'tiny_dmpt_rgbnt201.py'


def _train_tool():
    return load_script(ROOT / 'tools' / 'train.py', 'mmdmpt_tools_train')


def test_compile_flag_sets_the_backbone_switch(tmp_path):
    tool = _train_tool()
    args = tool.parse_args([str(CONFIG), '--work-dir', str(tmp_path), '--compile'])
    assert args.compile
    cfg = tool.merge_args(Config.fromfile(str(CONFIG)), args)
    assert cfg.model.backbone.torch_compile is True
    plain = tool.merge_args(
        Config.fromfile(str(CONFIG)), tool.parse_args([str(CONFIG), '--work-dir', str(tmp_path)])
    )
    assert not plain.model.backbone.get('torch_compile')
    # A dict in the config (e.g. CUDA graphs) is kept.
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.torch_compile = dict(mode='reduce-overhead')
    tool.use_compile(cfg)
    assert cfg.model.backbone.torch_compile == dict(mode='reduce-overhead')
    cfg.model.backbone.type = 'SomeOtherBackbone'
    with pytest.raises(ConfigError, match='--compile: model.backbone.type'):
        tool.use_compile(cfg)
