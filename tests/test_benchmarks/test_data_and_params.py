"""Smoke tests of data_throughput.py and count_all_params.py (tiny, fast)."""

import json
from pathlib import Path

from mmdmpt.testing import load_script

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / 'benchmarks'

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
        pretrained='checkpoints/does-not-exist.pt',
    ),
    head=dict(type='BNNeckHead', in_channels=192, num_classes=10),
)
"""


def _load(name):
    return load_script(BENCH / f'{name}.py')


def test_data_throughput_json(tmp_path, capsys):
    out = tmp_path / 'data.json'
    args = ['--layouts', 'rgbnt201', 'rgbnt100', '--num-ids', '9', '--samples', '3']
    args += ['--warmup', '1', '--work-dir', str(tmp_path / 'trees'), '--out', str(out)]
    _load('data_throughput').main(args)
    data = json.loads(out.read_text())
    assert list(data) == ['rgbnt201', 'rgbnt100']
    for entry in data.values():
        assert entry['samples_per_s'] > 0
        assert entry['output_shape'][:2] == [3, 3]
    assert data['rgbnt201']['output_shape'][2:] == [256, 128]
    assert data['rgbnt100']['output_shape'][2:] == [128, 256]
    assert '| rgbnt100 ' in capsys.readouterr().out


def test_count_all_params_tiny_config(tmp_path, capsys):
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    out = tmp_path / 'params.json'
    data = _load('count_all_params').main([str(config), '--out', str(out)])
    assert json.loads(out.read_text()) == data
    counts = data[str(config)]
    msp = 4 * (64 * 64 + 64) + 4 * 2 * 64
    assert counts['trainable_params_no_classifier'] == msp + 4 * 3 * 64 + 2 * 64 + 192
    assert counts['classifier_params'] == 192 * 10
    assert '8.417 % | NO ' in capsys.readouterr().out  # tiny towers exceed the budget


def test_count_all_params_default_list():
    configs = _load('count_all_params').default_configs()
    assert 'configs/dmpt/dmpt_vitb_rgbnt201.py' in configs
    assert 'configs/baselines/clip_vitb_fullft_rgbnt201.py' in configs
