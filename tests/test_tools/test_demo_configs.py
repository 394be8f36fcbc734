"""``make demo``'s configs and bookkeeping, without any training."""

import json
import os
import os.path as osp
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdmpt.registry import MODELS
from mmdmpt.testing import load_script, synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def demo():
    return load_script(ROOT / 'tools' / 'demo.py', 'mmdmpt_tool_demo')


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # the demo's config paths are relative to the repo


def _split(spec, layout='rgbnt201'):
    """Train / test raw ids that make_synthetic would write for ``spec``."""
    kind = 'person' if layout == 'rgbnt201' else 'vehicle'
    identities = synthetic.make_identities(
        spec['num_ids'], spec.get('family_size', 3), kind, spec['seed'], spec['id_offset']
    )
    train, test = synthetic.split_ids(
        identities, spec['train_ids'], spec['seed'], spec['id_offset']
    )
    return [i['pid'] for i in train], [i['pid'] for i in test]


def _held_out(num_train: int, val_fraction: float) -> int:
    """Training ids a dataset holds out with ``val_fraction`` (its rule)."""
    return max(1, int(round(val_fraction * num_train)))


def _build(cfg):
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.pretrained = None
    if cfg.model.head.num_classes == 'auto':  # the Runner reads it from the data
        cfg.model.head.num_classes = 7
    return MODELS.build(cfg.model)


def test_specs_match_the_configs(demo):
    bench_train, bench_test = _split(demo.BENCHMARK)
    pre_train, pre_test = _split(demo.PRETRAIN_SET)
    # ids of the stand-in's pretraining set are disjoint from the benchmark's
    assert not set(bench_train + bench_test) & set(pre_train + pre_test)
    assert 18 <= len(bench_test) <= 30
    standin = Config.fromfile(demo.STANDIN_CONFIG)
    dmpt = Config.fromfile(demo.DMPT_CONFIG)
    # each stage trains on its training ids minus the ones held out for the selection
    pre_held = _held_out(len(pre_train), standin.train_dataloader.dataset.val_fraction)
    bench_held = _held_out(len(bench_train), dmpt.train_dataloader.dataset.val_fraction)
    # ... and sizes its classifier from that training set ('auto')
    assert standin.model.head.num_classes == dmpt.model.head.num_classes == 'auto'
    assert len(pre_train) - pre_held == 261 and len(bench_train) - bench_held == 120
    assert bench_held == len(bench_test)  # as many held-out ids as test ids
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
    # validation: the held-out ids of the pretraining set, RGB only
    val = cfg.val_dataloader.dataset
    assert val.data_root == osp.join('some/root', 'pretrain')
    assert val.split == 'val' and tuple(val.modalities) == ('rgb',)
    assert val.val_fraction == cfg.train_dataloader.dataset.val_fraction > 0
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_epochs
    # the exported tower must be complete: 'auto' keeps every tensor of a
    # model whose backbone is not frozen
    hooks = {h['type']: h for h in cfg.custom_hooks}
    assert hooks['SafeCheckpointHook']['trainable_only'] == 'auto'
    assert cfg.model.backbone.frozen is False
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
    # held-out training ids for validation (and the recipe selection); the
    # test ids only in the test split
    fraction = cfg.train_dataloader.dataset.val_fraction
    assert fraction > 0
    assert cfg.val_dataloader.dataset.split == 'val'
    assert cfg.val_dataloader.dataset.val_fraction == fraction
    assert cfg.test_dataloader.dataset.split == 'test'
    assert cfg.model.head.test_feature in ('before', 'after')
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
    val = {'reid/mAP': 90.0, 'reid/Rank-1': 85.0, 'reid/mINP': 80.0}
    ids = dict(train=261, val=29)
    (tmp_path / 'standin.json').write_text(json.dumps(dict(settings=settings, val=val, ids=ids)))
    args = demo.parse_args(['--standin', str(ckpt), '--work-dir', str(tmp_path / 'work')])
    # reused, with the held-out figures measured when it was trained
    assert demo.make_standin(args) == dict(state='reused', val=val, ids=ids)


def _features(feats, pids, camids, is_query):
    import torch

    num = len(pids)
    return dict(
        feats=torch.tensor(feats, dtype=torch.float32),
        pids=torch.tensor(pids),
        camids=torch.tensor(camids),
        sceneids=torch.full((num,), -1),
        is_query=torch.tensor(is_query),
        sample_idx=torch.arange(num),
        modality_mask=torch.ones(num, 1, dtype=torch.bool),
        img_paths=[['x.jpg']] * num,
        modalities=['rgb'],
        has_scenes=False,
        normalized=False,
        missing=[],
        dataset_name='',
    )


def test_nearest_neighbour_shares(demo):
    features = _features(
        feats=[[1, 0], [0, 1], [1, 0], [0.9, 0.1], [0.5, 0.5], [0.1, 0.9]],
        pids=[1, 2, 1, 3, 1, 2],
        camids=[0, 1, 0, 0, 1, 0],
        is_query=[True, True, False, False, False, False],
    )
    shares = demo.nearest_neighbour_shares(features)
    # query 0: its twin (same id, same camera) is removed; the nearest kept
    # sample has its camera, another id. Query 1: nearest is its id, other camera.
    assert shares['camera'] == pytest.approx(50.0)
    assert shares['identity'] == pytest.approx(50.0)
    # kept gallery: query 0 sees 3 (2 same camera, 1 same id), query 1 all 4 (1, 1)
    assert shares['camera_chance'] == pytest.approx(100 * (2 / 3 + 1 / 4) / 2)
    assert shares['identity_chance'] == pytest.approx(100 * (1 / 3 + 1 / 4) / 2)
    assert shares['num_queries'] == 2


def test_nn_conclusion_follows_the_numbers(demo):
    chance = dict(camera_chance=50.0, identity_chance=2.0)
    assert 'not by identity' in demo.nn_conclusion(dict(chance, camera=95.0, identity=1.0))
    assert 'more than chance' in demo.nn_conclusion(dict(chance, camera=95.0, identity=20.0))
    assert 'no camera preference' in demo.nn_conclusion(dict(chance, camera=52.0, identity=1.0))


def _metrics(m):
    return {'reid/mAP': m, 'reid/Rank-1': m - 5, 'reid/mINP': m + 1}


def _run(test_map, val_map, nn):
    return dict(
        test={'rgb+nir+tir': _metrics(test_map), 'rgb': _metrics(test_map - 20)},
        val=_metrics(val_map),
        iters=600,
        ids=dict(train=120, val=30, test=30),
        nn=dict(nn, camera_chance=49.0, identity_chance=1.7, num_queries=300),
        counts=dict(
            trainable_params=100,
            total_params=1000,
            trainable_params_no_classifier=40,
            ratio=0.05,
            backbone_params=800,
        ),
        vision=dict(layers=4, width=128),
        seconds=10.0,
        show_dir='work/dmpt/rank_lists',
        curves='work/dmpt/curves.png',
    )


@pytest.mark.parametrize('b_map,checks', [(80.0, ('yes', 'yes')), (68.0, ('NO', 'NO'))])
def test_report_compares_like_for_like(demo, tmp_path, b_map, checks):
    for name, spec in demo.DATA_SETS:
        meta = tmp_path / name / 'synthetic_meta.json'
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps(dict(family_size=spec.get('family_size', 3))))
    args = demo.parse_args(['--data-root', str(tmp_path)])
    results = dict(
        frozen=dict(
            raw=_metrics(50.0),
            standardised=_metrics(55.0),
            train_ids=120,
            train_samples=2400,
            seconds=5.0,
        ),
        dmpt=_run(b_map, 90.0, dict(camera=30.0, identity=70.0)),
        random_init=_run(3.0, 4.0, dict(camera=97.0, identity=0.3)),
    )
    standin = dict(state='reused', val=_metrics(88.0), ids=dict(train=261, val=29))
    text = demo.report(args, 0.0, standin, 0.0, results)
    # the gain is taken against the better (a): the standardised one here
    assert f'(b) - better (a) (standardised): {b_map - 55.0:+.1f} mAP' in text
    assert f'(b) mAP >= 75: {checks[0]}' in text
    assert f'(b) - better (a) >= 15: {checks[1]}' in text
    assert 'held-out ids' in text
    assert 'test ids were used once' in text
    assert 'tuned' not in text and 'nothing selected' not in text
    assert 'tower was never trained (random weights)' in text  # the stand-in's text tower
    assert 'not by identity' in text  # (c): 97 % same camera, identity at chance
