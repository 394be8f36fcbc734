import json
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from mmdmpt.testing import load_script

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / 'tools' / 'analysis_tools' / 'count_params.py'

TINY_CONFIG = """
model = dict(
    type='MultiModalReID',
    backbone=dict(
        type='DMPTCLIPViT',
        clip_model=dict(
            embed_dim=32,
            vision_cfg=dict(width=64, layers=4, heads=2, patch_size=8, image_size=32),
            text_cfg=dict(width=64, layers=2, heads=2, context_length=77, vocab_size=49408),
        ),
        img_size=(64, 32),
        num_modality_prompts=2,
        num_semantic_prompts=3,
        num_bind_prompts=1,
        bind_layers=(1, 2),
        pretrained='{pretrained}',
    ),
    head=dict(type='BNNeckHead', in_channels=192, num_classes=10),
)
"""


def _tool():
    return load_script(TOOL, 'count_params')


def test_tiny_config_json(tmp_path, capsys, tiny_weights):
    path = tmp_path / 'tiny.py'
    path.write_text(TINY_CONFIG.format(pretrained=tiny_weights))
    assert _tool().main([str(path), '--json']) == 0
    out = capsys.readouterr().out.strip()
    counts = json.loads(out)  # exactly one JSON object on stdout
    for key in ('backbone_params', 'trainable_params', 'trainable_params_no_classifier', 'ratio'):
        assert key in counts
    # By hand: visual tower of the tiny CLIP at 64x32 (8x4 grid, patch 8).
    width, layers = 64, 4
    block = 4 * width * width + 4 * width + 2 * (width * 4 * width) + 5 * width + 4 * width
    visual = 3 * 64 * width + width + 33 * width + 2 * width + layers * block
    visual += 2 * width + width * 32
    assert counts['backbone_params'] == visual
    msp = 4 * (64 * 64 + 64) + 4 * 2 * 64  # P_l and E_l for 4 layers
    sp = 4 * 3 * 64
    bind = 2 * 1 * 64
    bn = 192  # BNNeck weight (bias frozen)
    assert counts['trainable_params_no_classifier'] == msp + sp + bind + bn
    assert counts['trainable_params'] == msp + sp + bind + bn + 192 * 10
    assert counts['ratio'] == pytest.approx((msp + sp + bind + bn) / visual)


def test_missing_pretrained_falls_back(tmp_path, capsys):
    path = tmp_path / 'tiny.py'
    path.write_text(TINY_CONFIG.format(pretrained='checkpoints/nope.pt'))
    assert _tool().main([str(path)]) == 0
    captured = capsys.readouterr()
    assert 'checkpoints/nope.pt not found' in captured.err
    assert 'trainable without classifier' in captured.out


def test_cfg_options(tmp_path, capsys):
    path = tmp_path / 'tiny.py'
    path.write_text(TINY_CONFIG.format(pretrained='x'))
    argv = [str(path), '--json', '--cfg-options', 'model.backbone.pretrained=None']
    argv += ['model.backbone.num_bind_prompts=0']
    assert _tool().main(argv) == 0
    captured = capsys.readouterr()
    assert 'not found' not in captured.err
    counts = json.loads(captured.out)
    assert (
        counts['trainable_params_no_classifier']
        == 4 * (64 * 64 + 64) + 4 * 2 * 64 + 4 * 3 * 64 + 192
    )


@pytest.mark.slow
def test_default_vit_b16_budget():
    """The shipped DMPT config stays within 6.5 % of the ViT-B/16 visual tower."""
    cfg = ROOT / 'configs' / '_base_' / 'models' / 'dmpt_vit-b16.py'
    result = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            str(cfg),
            '--json',
            '--num-classes',
            '171',
            '--cfg-options',
            'model.backbone.pretrained=None',
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts['ratio'] <= 0.065
    # 12 x (512*768 + 768) + 12*4*768 + 12*8*768 + 6*4*768 + 2304
    assert counts['trainable_params_no_classifier'] == 4_859_136
    assert counts['backbone_params'] == 86_140_416  # visual tower at 256x128, with proj
    assert counts['trainable_params'] == 4_859_136 + 2304 * 171


def test_configs_parse():
    for name in ('dmpt_vit-b16.py', 'clip_vit-b16_fullft.py'):
        cfg = Config.fromfile(ROOT / 'configs' / '_base_' / 'models' / name)
        assert cfg.model.type == 'MultiModalReID'
        # in_channels / num_modalities follow the backbone; num_classes the data
        assert 'in_channels' not in cfg.model.head and cfg.model.head.num_classes == 'auto'
    full = Config.fromfile(ROOT / 'configs' / '_base_' / 'models' / 'clip_vit-b16_fullft.py')
    assert full.model.backbone.frozen is False and full.model.backbone.bind_layers == ()
