"""``make demo``'s configs and bookkeeping, without any training."""

import importlib.util
import json
import os
import os.path as osp
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdmpt.datasets import synthetic
from mmdmpt.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def demo():
    name = 'mmdmpt_tool_demo'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / 'demo.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # the demo's config paths are relative to the repo


def _split(spec, layout='rgbnt201'):
    """Train / test raw ids that make_synthetic would write for ``spec``."""
    kind = 'person' if layout == 'rgbnt201' else 'vehicle'
    identities = synthetic._make_identities(
        spec['num_ids'], spec.get('family_size', 3), kind, spec['seed'], spec['id_offset']
    )
    train, test = synthetic._split_ids(
        identities, spec['train_ids'], spec['seed'], spec['id_offset']
    )
    return [i['pid'] for i in train], [i['pid'] for i in test]


def _build(cfg):
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.pretrained = None
    return MODELS.build(cfg.model)


def test_specs_match_the_configs(demo):
    bench_train, bench_test = _split(demo.BENCHMARK)
    pre_train, pre_test = _split(demo.PRETRAIN_SET)
    # ids of the stand-in's pretraining set are disjoint from the benchmark's
    assert not set(bench_train + bench_test) & set(pre_train + pre_test)
    assert 18 <= len(bench_test) <= 30
    standin = Config.fromfile(demo.STANDIN_CONFIG)
    dmpt = Config.fromfile(demo.DMPT_CONFIG)
    assert standin.model.head.num_classes == len(pre_train)
    assert dmpt.model.head.num_classes == len(bench_train)
    # the same tiny CLIP tower in both stages
    assert standin.model.backbone.clip_model == dmpt.model.backbone.clip_model
    assert standin.model.backbone.img_size == dmpt.model.backbone.img_size
    assert (demo.IMAGE_SIZE['height'], demo.IMAGE_SIZE['width']) == tuple(
        dmpt.model.backbone.img_size
    )


def test_standin_config_builds_rgb_only(demo, tmp_path):
    cfg = demo.load_cfg(demo.STANDIN_CONFIG, str(tmp_path), 'some/root')
    assert cfg.train_dataloader.dataset.data_root == osp.join('some/root', 'pretrain')
    assert tuple(cfg.train_dataloader.dataset.modalities) == ('rgb',)
    assert cfg.get('test_dataloader') is None
    model = _build(cfg)
    assert tuple(model.backbone.modalities) == ('rgb',)
    assert not model.backbone.frozen
    assert all(p.requires_grad for p in model.backbone.visual.transformer.parameters())
    names = [n for n, _ in model.named_parameters()]
    assert not any('prompt' in n for n in names)


def test_dmpt_config_builds_frozen(demo, tmp_path):
    cfg = demo.load_cfg(demo.DMPT_CONFIG, str(tmp_path), 'some/root')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[key].dataset.data_root == osp.join('some/root', 'RGBNT201')
    assert cfg.model.backbone.pretrained == demo.parse_args([]).standin
    assert cfg.train_dataloader.batch_size == cfg.train_dataloader.sampler.batch_size
    model = _build(cfg)
    assert model.backbone.frozen
    assert tuple(model.backbone.modalities) == ('rgb', 'nir', 'tir')
    assert not any(p.requires_grad for p in model.backbone.visual.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any('semantic_prompts' in n for n in trainable)
    assert any('bind_prompts' in n for n in trainable)


def test_data_is_reused_and_remade_on_change(demo, tmp_path, monkeypatch):
    tiny = dict(num_ids=6, train_ids=3, seed=0, id_offset=1, samples_per_camera=1)
    monkeypatch.setattr(demo, 'DATA_SETS', (('RGBNT201', tiny),))
    monkeypatch.setattr(demo, 'IMAGE_SIZE', dict(height=64, width=32))
    root = str(tmp_path)
    meta = osp.join(root, 'RGBNT201', 'synthetic_meta.json')
    demo.make_data(root)
    first = os.stat(meta).st_mtime_ns
    demo.make_data(root)  # same settings: reused
    assert os.stat(meta).st_mtime_ns == first
    monkeypatch.setattr(demo, 'DATA_SETS', (('RGBNT201', dict(tiny, num_ids=9, train_ids=6)),))
    demo.make_data(root)  # other settings: written again
    with open(meta) as f:
        assert len(json.load(f)['train_ids']) == 6
    with open(osp.join(root, 'RGBNT201', demo.STAMP)) as f:
        assert json.load(f)['num_ids'] == 9


def test_standin_is_reused_when_its_settings_match(demo, tmp_path):
    settings = demo.standin_settings()
    assert settings == demo.standin_settings()  # stable across calls
    assert settings['data'] == demo.data_settings(demo.PRETRAIN_SET)
    ckpt = tmp_path / 'standin.safetensors'
    ckpt.write_bytes(b'not read when reused')
    (tmp_path / 'standin.json').write_text(json.dumps(settings))
    args = demo.parse_args(['--standin', str(ckpt), '--work-dir', str(tmp_path / 'work')])
    assert demo.make_standin(args) == 'reused'
