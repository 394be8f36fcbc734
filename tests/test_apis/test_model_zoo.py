"""The model index (metafiles, README table) and list_models / get_model / init_model /
inference_model."""

import glob
import json
import os
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel

from mmdmpt.apis import (
    ModelHub,
    ReIDInferencer,
    get_model,
    inference_model,
    init_model,
    list_models,
)
from mmdmpt.apis.model_zoo import model_index_path
from mmdmpt.testing import load_script
from mmdmpt.utils.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO = 'dmpt_vit-tiny_synthetic'
DEMO_CONFIG = ROOT / 'configs' / 'dmpt' / f'{DEMO}.py'
TASK = 'Multi-modal Object Re-identification'
# Measured and documented (README "Cost", docs/method.md "Parameter budget"):
VITB_TOWER = 86_140_416
VITB_DMPT_TRAINABLE = 4_859_136
VITB_FULLFT_TRAINABLE = 85_749_504


def load_gen():
    return load_script(ROOT / 'tools' / 'misc' / 'gen_model_zoo.py', 'mmdmpt_tests_gen_model_zoo')


def config_names():
    paths = glob.glob(str(ROOT / 'configs' / 'dmpt' / '*.py'))
    paths += glob.glob(str(ROOT / 'configs' / 'baselines' / '*.py'))
    return sorted(osp.splitext(osp.basename(p))[0] for p in paths)


def index_models():
    return {m.name: m for m in load_gen().load_models(str(ROOT))}


def images(seed=0, num=1):
    rng = np.random.default_rng(seed)
    return [
        {m: rng.integers(0, 256, (128, 64, 3), dtype=np.uint8) for m in ('rgb', 'nir', 'tir')}
        for _ in range(num)
    ]


# ------------------------------------------------------------- the index
def test_index_is_the_checkouts():
    assert model_index_path() == str(ROOT / 'model-index.yml')


def test_index_lists_every_config_once():
    models = index_models()
    assert sorted(models) == config_names()
    for name, model in models.items():
        assert osp.isfile(ROOT / model.config), model.config
        assert osp.splitext(osp.basename(model.config))[0] == name
        collection = 'DMPT' if model.config.startswith('configs/dmpt/') else 'CLIP full fine-tuning'
        assert model.in_collection == collection
        (result,) = model.results.data
        assert result.task == TASK
        assert result.dataset == model.metadata.data['Training Data']
        assert sorted(result.metrics) == ['Rank-1', 'mAP', 'mINP']


def test_real_benchmarks_are_not_yet_measured_and_have_no_weights():
    for name, model in index_models().items():
        if name == DEMO:
            continue
        assert set(model.results.data[0].metrics.values()) == {'not yet measured'}, name
        assert model.weights is None, name


def test_demo_points_to_the_checkpoint_make_demo_writes():
    from mmengine.config import Config

    model = index_models()[DEMO]
    epochs = Config.fromfile(str(DEMO_CONFIG)).train_cfg.max_epochs
    assert model.weights == f'work_dirs/demo/dmpt/epoch_{epochs}.pth'
    assert model.metadata.data['Training Data'] == 'synthetic (make demo)'


def test_metafiles_are_what_the_generator_writes():
    """Every field but the measured counts is re-derived from the configs here; the
    counts themselves are checked by the next two tests."""
    gen = load_gen()
    models = index_models()

    def recorded(path):
        meta = models[osp.splitext(osp.basename(path))[0]].metadata.data
        trainable = meta['Trainable Parameters (no classifier)']
        tower = meta['Visual Tower Parameters']
        return dict(
            trainable_params_no_classifier=trainable, backbone_params=tower, ratio=trainable / tower
        )

    texts = gen.build_metafiles(str(ROOT), counter=recorded)
    for rel, text in texts.items():
        assert (ROOT / rel).read_text() == text, (
            f'{rel} is stale: run python tools/misc/gen_model_zoo.py --update-metafile'
        )


def test_demo_counts_measured_afresh():
    counts = load_gen().count_config(str(DEMO_CONFIG))
    meta = index_models()[DEMO].metadata.data
    assert meta['Trainable Parameters (no classifier)'] == counts['trainable_params_no_classifier']
    assert meta['Visual Tower Parameters'] == counts['backbone_params']
    assert meta['Trainable Ratio'] == f'{100 * counts["ratio"]:.2f} %'


def test_vitb_counts_are_the_documented_measurements():
    for name, model in index_models().items():
        if name == DEMO:
            continue
        meta = model.metadata.data
        expected = VITB_DMPT_TRAINABLE if name.startswith('dmpt_') else VITB_FULLFT_TRAINABLE
        assert meta['Trainable Parameters (no classifier)'] == expected, name
        assert meta['Visual Tower Parameters'] == VITB_TOWER, name
    assert '4,859,136' in (ROOT / 'README.md').read_text()


def test_readme_table_agrees_with_the_metafiles(capsys):
    before = (ROOT / 'README.md').read_text()
    assert load_gen().main(['--check']) == 0, capsys.readouterr().err
    assert (ROOT / 'README.md').read_text() == before


def test_table_renders_measured_demo_metrics(tmp_path):
    gen = load_gen()
    counts = dict(trainable_params_no_classifier=40832, backbone_params=904448)
    result = dict(
        counts=counts,
        test={
            'rgb': {'reid/mAP': 46.3146, 'reid/Rank-1': 36.6667, 'reid/mINP': 49.4586},
            'rgb+nir+tir': {'reid/mAP': 76.5629, 'reid/Rank-1': 64.6667, 'reid/mINP': 78.8604},
        },
        date='2026-11-30',
    )
    path = tmp_path / 'result.json'
    path.write_text(json.dumps(result))
    filled = gen.read_demo_result(str(path), counts)
    assert filled == dict(metrics={'mAP': 76.6, 'Rank-1': 64.7, 'mINP': 78.9}, date='2026-11-30')
    assert gen._metric_cell(filled['metrics']) == '76.6 / 64.7 / 78.9'
    # a flat test dict (no missing-modality table) is read too
    result['test'] = result['test']['rgb']
    path.write_text(json.dumps(result))
    assert gen.read_demo_result(str(path), counts)['metrics']['mAP'] == 46.3
    # a result of another model is refused
    with pytest.raises(ConfigError, match='rerun make demo'):
        gen.read_demo_result(str(path), dict(counts, trainable_params_no_classifier=1))


# ----------------------------------------------------------- list_models
def test_list_models_patterns():
    assert list_models() == config_names()
    assert list_models('dmpt_vitb_rgbnt') == [
        'dmpt_vitb_rgbnt100',
        'dmpt_vitb_rgbnt201',
        'dmpt_vitb_rgbnt201_val10',
    ]
    assert list_models('DMPT_VITB_RGBNT201') == ['dmpt_vitb_rgbnt201', 'dmpt_vitb_rgbnt201_val10']
    assert list_models('*rgbnt201', exclude_patterns=['clip']) == [
        'dmpt_vitb_rgbnt201',
        'dmpt_vitb_rgbnt201_val10',
    ]
    assert list_models('clip_', task=TASK) == [n for n in config_names() if n.startswith('clip_')]
    assert list_models(task='null') == []
    assert ModelHub.has('dmpt_vitb_msvr310') and not ModelHub.has('resnet50')


# ------------------------------------------------------------- get_model
@pytest.fixture(scope='module')
def demo_model():
    torch.manual_seed(0)
    # No weights and no training set to read num_classes='auto' from: say it (the
    # demo's 150 training ids); the checkpoints below then record it.
    return get_model(DEMO, backbone=dict(pretrained=None), head=dict(num_classes=150))


@pytest.fixture(scope='module')
def full_checkpoint(demo_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('zoo') / 'full.pth'
    torch.save(dict(state_dict=demo_model.state_dict(), meta=dict(epoch=4)), path)
    return path


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_get_model_by_name(demo_model):
    assert isinstance(demo_model, BaseModel) and not demo_model.training
    assert demo_model._metainfo.name == DEMO
    assert demo_model._checkpoint is None
    assert demo_model._config.model.backbone.pretrained is None  # the kwargs were merged


def test_get_model_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="did you mean 'dmpt_vit-tiny_synthetic'"):
        get_model('dmpt_vit-tiny_synthetc')
    with pytest.raises(CheckpointError, match='dmpt_vitb_rgbnt201 has no checkpoint'):
        get_model('dmpt_vitb_rgbnt201', pretrained=True)
    with pytest.raises(CheckpointError, match='no load_from'):
        get_model(str(DEMO_CONFIG), pretrained=True)
    with pytest.raises(TypeError, match='model name, a config file or a Config'):
        get_model(3)
    with pytest.raises(ConfigError, match=r"num_classes='auto'.*set model\.head\.num_classes"):
        get_model(DEMO, backbone=dict(pretrained=None))  # random weights, no size known
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match='written by `make demo`'):
        get_model(DEMO, pretrained=True)


def test_get_model_loads_strictly(demo_model, full_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo's stand-in file is not here: every weight is loaded
    model = get_model(DEMO, pretrained=full_checkpoint)
    assert_same_weights(model, demo_model)
    assert model._checkpoint == str(full_checkpoint)
    # pretrained=True: the index's Weights, relative to the current directory
    weights = Path(index_models()[DEMO].weights)
    weights.parent.mkdir(parents=True)
    os.symlink(full_checkpoint, weights)
    assert_same_weights(get_model(DEMO, pretrained=True), demo_model)
    # a checkpoint that does not fit is refused, naming the tensor
    state = dict(demo_model.state_dict())
    key = next(k for k in state if 'semantic' in k)
    state[key] = torch.zeros(3)
    bad = tmp_path / 'bad.pth'
    torch.save(dict(state_dict=state), bad)
    with pytest.raises(CheckpointError, match=key.replace('.', r'\.')):
        get_model(DEMO, pretrained=bad)


def test_init_model_equals_get_model(demo_model, full_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = init_model(str(DEMO_CONFIG), full_checkpoint, device='cpu')
    assert not model.training and model._metainfo is None
    assert_same_weights(model, demo_model)


# ------------------------------------------------------- inference_model
def test_inference_model_matches_the_inferencer(demo_model, full_checkpoint, tmp_path, monkeypatch):
    samples = images(num=3)
    samples[1].pop('nir')  # any subset of modalities
    one = inference_model(demo_model, samples[0])
    many = inference_model(demo_model, samples)
    assert one.shape == (3 * 128,) and many.shape == (3, 3 * 128)
    assert torch.allclose(many.norm(dim=1), torch.ones(3))
    assert torch.allclose(one, many[0], atol=1e-6)
    monkeypatch.chdir(tmp_path)
    inferencer = ReIDInferencer(str(DEMO_CONFIG), str(full_checkpoint), device='cpu')
    assert torch.allclose(many, inferencer(samples), atol=1e-6)
    raw = inference_model(inferencer, samples, normalize=False)
    assert torch.allclose(raw, inferencer(samples, normalize=False), atol=1e-6)


def test_inference_model_needs_the_config(demo_model):
    class Bare(BaseModel):
        def forward(self, *args, **kwargs):
            return None

    with pytest.raises(ConfigError, match='needs the config'):
        inference_model(Bare(), images()[0])
