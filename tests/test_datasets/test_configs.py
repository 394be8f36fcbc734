import os.path as osp

import pytest
import torch
from mmengine.dataset import default_collate

from mmdmpt.engine.launch import load_config
from mmdmpt.registry import DATA_SAMPLERS, DATASETS, MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'rgbnt201': ('rgbnt201_bs64_256x128.py', 'RGBNT201', (256, 128), 64, 4),
    'rgbnt100': ('rgbnt100_bs128_128x256.py', 'RGBNT100', (128, 256), 128, 16),
    'msvr310': ('msvr310_bs64_128x256.py', 'MSVR310', (128, 256), 64, 4),
    'wmveid863': ('wmveid863_bs64_128x256.py', 'WMVeID863', (128, 256), 64, 4),
}


@pytest.mark.parametrize('layout', sorted(CONFIGS))
def test_dataset_config(layout, trees):
    name, dtype, size, batch, k = CONFIGS[layout]
    cfg = load_config(osp.join(ROOT, 'configs', '_base_', 'datasets', name))
    assert cfg.dataset_type == dtype
    assert cfg.data_root == f'data/{dtype}/'
    assert cfg.data_preprocessor.type == 'MultiModalDataPreprocessor'
    train = cfg.train_dataloader
    assert train.batch_size == batch == train.sampler.batch_size
    assert train.sampler.type == 'IdentitySampler' and train.sampler.num_instances == k
    assert train.collate_fn.type == 'default_collate' and train.dataset.split == 'train'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        # one dataset type and one data root per config, read by every split
        assert loader.dataset.type == cfg.dataset_type and loader.dataset.data_root == cfg.data_root
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.split == 'test' and loader.sampler.shuffle is False
    assert cfg.val_evaluator.type == 'ReIDMetric' and cfg.test_evaluator == cfg.val_evaluator
    aug = cfg.train_pipeline[1]
    assert aug.type == 'TransformBroadcaster' and aug.share_random_params is True
    assert aug.transforms[0].scale == size[::-1]

    # build everything on a synthetic tree (tiles of the config's size for strips)
    root, _ = trees[layout]
    tile_w = {'rgbnt100': 64}.get(layout)
    for step in train.dataset.pipeline + cfg.test_dataloader.dataset.pipeline:
        if step.type == 'LoadMultiModalImages' and 'tile_width' in step:
            step.tile_width = tile_w
    dataset_cfg = dict(train.dataset, data_root=root)
    dataset = DATASETS.build(dataset_cfg)
    sampler = DATA_SAMPLERS.build(
        dict(train.sampler, batch_size=8, num_instances=2, seed=0),
        default_args=dict(dataset=dataset),
    )
    idx = list(sampler)[:8]
    batch = default_collate([dataset[i] for i in idx])
    assert batch['inputs'].shape == (8, 3, 3, *size) and batch['inputs'].dtype == torch.uint8
    pre = MODELS.build(cfg.data_preprocessor)
    out = pre(batch, training=True)
    assert out['inputs'].dtype == torch.float32 and out['inputs'].abs().max() <= 1.0 + 1e-6
    test = DATASETS.build(dict(cfg.test_dataloader.dataset, data_root=root))
    sample = test[0]
    assert sample['inputs'].shape == (3, 3, *size)
    assert sample['data_samples'].is_query is True
    assert ('sceneid' in sample['data_samples']) == (layout == 'msvr310')
