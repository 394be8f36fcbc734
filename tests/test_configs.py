"""Every config under configs/ parses, names registered types and builds its model."""

from pathlib import Path

import pytest
from mmengine.registry import init_default_scope

from mmdmpt.engine.launch import load_config
from mmdmpt.registry import DATA_SAMPLERS, DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS

ROOT = Path(__file__).resolve().parents[1]
LEAF_CONFIGS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts
)


def _check_pipeline(pipeline):
    for transform in pipeline:
        assert TRANSFORMS.get(transform['type']) is not None, transform['type']
        _check_pipeline(transform.get('transforms', []))


def test_configs_are_found():
    assert 'configs/dmpt/dmpt_vitb_rgbnt201.py' in LEAF_CONFIGS
    assert len(LEAF_CONFIGS) >= 8


@pytest.mark.slow
@pytest.mark.parametrize('path', LEAF_CONFIGS)
def test_leaf_config_builds(path):
    cfg = load_config(str(ROOT / path))
    init_default_scope(cfg.default_scope)
    assert cfg.default_scope == 'mmdmpt'
    for loader_key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(loader_key)
        if not loader:
            continue
        assert DATASETS.get(loader.dataset.type) is not None
        assert DATA_SAMPLERS.get(loader.sampler.type) is not None
        _check_pipeline(loader.dataset.pipeline)
        assert loader.dataset.data_root.startswith('data/'), 'relative data roots only'
        # one data root and one dataset type per config, read by every split
        assert loader.dataset.data_root == cfg.data_root
        assert loader.dataset.type == cfg.dataset_type
    for evaluator_key in ('val_evaluator', 'test_evaluator'):
        if cfg.get(evaluator_key):
            assert METRICS.get(cfg[evaluator_key].type) is not None
    for hook in cfg.get('custom_hooks', []):
        assert HOOKS.get(hook['type']) is not None
    backbone = cfg.model.backbone
    pretrained = backbone.get('pretrained')
    assert pretrained is None or not Path(pretrained).is_absolute()
    backbone.pretrained = None
    if cfg.model.head.get('num_classes') == 'auto':  # the Runner reads it from the data
        cfg.model.head.num_classes = 7
    model = MODELS.build(cfg.model)
    loader = cfg.get('train_dataloader')
    if loader:
        modalities = tuple(loader.dataset.get('modalities', ('rgb', 'nir', 'tir')))
        assert tuple(model.backbone.modalities) == modalities
        assert loader.batch_size == loader.sampler.batch_size
        assert loader.batch_size % loader.sampler.num_instances == 0
    head = model.head
    assert head.in_channels == model.backbone.out_channels * len(model.backbone.modalities)
