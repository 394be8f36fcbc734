"""The library raises the user-error types at its user-error sites (in-process).

A user error (a bad config value, a missing or odd file or folder, a modality
mismatch, an argument out of range) is one of :mod:`mmdmpt.utils.errors`' types, so the
tools print it as one block with exit status 2; each type is also the built-in
exception callers caught before. Internal errors (shapes inside the forward pass, API
misuse) keep their built-in types.
"""

import os
import shutil

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from mmdmpt.datasets import RGBNT201, IdentitySampler, LoadMultiModalImages
from mmdmpt.datasets.transforms import (
    PackMultiModalReIDInputs,
    ReIDRandomCrop,
    ReIDRandomErasing,
)
from mmdmpt.testing import make_synthetic
from mmdmpt.utils.cli import format_user_error
from mmdmpt.utils.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DataNotFoundError,
    MMDMPTError,
    TrainingError,
)


@pytest.fixture(scope='module', autouse=True)
def _scope():
    init_default_scope('mmdmpt')


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('user_errors') / 'RGBNT201'
    make_synthetic(
        str(root), layout='rgbnt201', num_ids=6, train_ids=3, samples_per_camera=1,
        height=64, width=32, seed=1,
    )  # fmt: skip
    return root


@pytest.fixture
def tree_copy(tree, tmp_path):
    copy = tmp_path / 'RGBNT201'
    shutil.copytree(tree, copy)
    return copy


# ------------------------------------------------------------------ datasets
def test_missing_split_folder_names_it(tree_copy):
    shutil.rmtree(tree_copy / 'test')
    with pytest.raises(DataNotFoundError) as info:
        RGBNT201(data_root=str(tree_copy), split='query')
    assert isinstance(info.value, FileNotFoundError)
    text = str(info.value)
    assert f"folder of split 'query' not found: {tree_copy / 'test'}" in text
    assert "expected 'test' under data_root" in text


def test_missing_modality_folder_and_unpaired_image(tree_copy):
    shutil.rmtree(tree_copy / 'train_171' / 'TI')
    with pytest.raises(DataNotFoundError, match=r"folder of modality 'tir' not found: .*TI"):
        RGBNT201(data_root=str(tree_copy), split='train')
    # without tir the tree reads; a nir image removed leaves its rgb twin unpaired
    nir = tree_copy / 'train_171' / 'NI'
    lone = sorted(nir.iterdir())[0]
    lone.unlink()
    with pytest.raises(DataNotFoundError, match=f"missing 'nir' image {lone}"):
        RGBNT201(data_root=str(tree_copy), split='train', modalities=('rgb', 'nir'))


def test_empty_split_and_missing_root(tree_copy, tmp_path):
    for modality in ('RGB', 'NI', 'TI'):
        for path in (tree_copy / 'test' / modality).iterdir():
            path.unlink()
    with pytest.raises(DataError, match=r"split 'query' is empty: no image under .*test"):
        RGBNT201(data_root=str(tree_copy), split='query')
    with pytest.raises(DataNotFoundError, match=r'data_root not found: .*nowhere; put'):
        RGBNT201(data_root=str(tmp_path / 'nowhere'))


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(modalities=('rgb', 'depth')), "unknown modality 'depth'"),
        (dict(split='validation'), "unknown split 'validation' (dataset.split)"),
        (dict(split='val'), "split 'val' needs val_fraction > 0"),
        (dict(split='val', val_fraction=0.9), 'leaves none to train on'),
    ],
)
def test_bad_dataset_settings_are_config_errors(tree, kwargs, message):
    with pytest.raises(ConfigError) as info:
        RGBNT201(data_root=str(tree), **kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- transforms
def _sample(tree):
    return RGBNT201(data_root=str(tree), split='train').get_data_info(0)


def test_loader_names_a_missing_or_undecodable_image(tree_copy):
    info = _sample(tree_copy)
    missing, broken = info['img_paths'][1], info['img_paths'][2]
    with open(broken, 'w') as f:
        f.write('not an image')
    load = LoadMultiModalImages(missing_modalities=('nir',))
    with pytest.raises(DataError) as err:
        load(dict(info))
    assert str(err.value) == f'cannot decode image {broken}: corrupt or not an image'
    os.remove(missing)
    with pytest.raises(DataNotFoundError, match=f'image file not found: {missing}'):
        LoadMultiModalImages()(dict(info))
    # a folder where the image should be: named, not a bare OSError
    os.mkdir(missing)
    with pytest.raises(DataError, match=f'cannot read image {missing}: Is a directory'):
        LoadMultiModalImages()(dict(info))


def test_loader_settings_are_config_errors(tree):
    with pytest.raises(ConfigError, match='every modality of the sample .* is marked missing'):
        LoadMultiModalImages(missing_modalities=('rgb', 'nir', 'tir'))(dict(_sample(tree)))
    with pytest.raises(ConfigError, match="missing_modalities=.*lowercase words.*'NIR'"):
        LoadMultiModalImages(missing_modalities=('NIR',))
    with pytest.raises(ConfigError, match='tile_width must be positive'):
        LoadMultiModalImages(tile_width=0)
    with pytest.raises(ConfigError, match='padding must be >= 0'):
        ReIDRandomCrop(padding=-1)
    with pytest.raises(ConfigError, match='area_range must satisfy'):
        ReIDRandomErasing(area_range=(0.5, 0.2))


def test_packing_images_of_different_sizes_names_the_sample():
    imgs = [np.zeros((8, 4, 3), np.uint8), np.zeros((8, 6, 3), np.uint8)]
    results = dict(imgs=imgs, img_paths=['a/rgb.jpg', 'a/nir.jpg'])
    with pytest.raises(DataError, match=r"differ in shape .* of \['a/rgb.jpg', 'a/nir.jpg'\]"):
        PackMultiModalReIDInputs()(results)


# ------------------------------------------------------------ sampler, model
def test_sampler_settings_are_config_errors(tree):
    dataset = RGBNT201(data_root=str(tree), split='train', lazy_init=False)
    with pytest.raises(ConfigError, match='batch_size=6 is not divisible by num_instances=4'):
        IdentitySampler(dataset, batch_size=6, num_instances=4, seed=0)
    with pytest.raises(ConfigError, match='use a smaller train_dataloader.batch_size'):
        IdentitySampler(dataset, batch_size=16, num_instances=2, seed=0)


def test_modality_mismatch_is_a_config_error():
    from mmengine.structures import BaseDataElement

    from mmdmpt.engine.hooks.consistency_hook import DataModelCheckHook
    from mmdmpt.models.data_preprocessors import MultiModalDataPreprocessor

    batch = dict(inputs=torch.zeros(1, 3, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ConfigError, match=r'data_preprocessor.modalities\); expected the same'):
        MultiModalDataPreprocessor(modalities=('rgb', 'tir'))(batch)
    sample = BaseDataElement(metainfo=dict(modalities=('tir', 'nir', 'rgb')))
    with pytest.raises(ConfigError, match=r'sample modalities .* differ from'):
        MultiModalDataPreprocessor(modalities=('rgb', 'nir', 'tir'))(
            dict(batch, data_samples=[sample])
        )
    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.modalities = ('rgb', 'nir', 'tir')
    expected = r"model.backbone.modalities=.* but test_loader.dataset yields modalities \('rgb',"
    with pytest.raises(ConfigError, match=expected):
        DataModelCheckHook._check_modalities(model, dict(modalities=('rgb', 'tir')), 'test_loader')


def test_backbone_and_clip_settings_are_config_errors():
    from mmdmpt.models.backbones import DMPTCLIPViT
    from mmdmpt.models.utils import resolve_clip_config

    with pytest.raises(ConfigError, match=r'feature \(model.backbone.feature\) must be one of'):
        DMPTCLIPViT(clip_model='ViT-B-16', feature='bogus')
    with pytest.raises(ConfigError, match=r'img_size=\(60, 32\) \(model.backbone.img_size'):
        resolve_clip_config('ViT-B-16', (60, 32))
    with pytest.raises(ConfigError, match="Unknown open_clip model 'ViT-X'"):
        resolve_clip_config('ViT-X', (64, 32))
    with pytest.raises(ConfigError, match='must be an open_clip model name or a dict, got int'):
        resolve_clip_config(3, (64, 32))


def test_clip_weight_files_are_checkpoint_errors(tmp_path):
    from mmdmpt.models.utils import CLIPWeightsError, load_clip_weights
    from mmdmpt.models.utils.clip_weights import CLIPWeightsNotFoundError

    with pytest.raises(CLIPWeightsNotFoundError) as info:
        load_clip_weights(str(tmp_path / 'ViT-B-16.pt'))
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, FileNotFoundError)
    bad = tmp_path / 'bad.pt'
    bad.write_text('not weights')
    with pytest.raises(CLIPWeightsError) as info:
        load_clip_weights(str(bad))
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)
    assert str(bad) in str(info.value)


# ------------------------------------------------------ metric, training, apis
def test_metric_settings_fail_at_build_and_a_query_only_split_is_a_data_error():
    from mmdmpt.registry import METRICS

    with pytest.raises(ConfigError, match='k1 must be a positive int, got 0'):
        METRICS.build(dict(type='ReIDMetric', rerank=dict(k1=0)))  # not after a test pass
    with pytest.raises(ConfigError, match='metric must be one of'):
        METRICS.build(dict(type='ReIDMetric', metric='l1'))
    metric = METRICS.build(dict(type='ReIDMetric'))
    sample = dict(pred_feature=torch.ones(4), gt_label=1, camid=0, is_query=True)
    metric.process({}, [sample])
    with pytest.raises(DataError, match="no gallery samples .*dataset.split='test'"):
        metric.compute_metrics(metric.results)


def test_nonfinite_loss_is_a_training_error():
    from mmdmpt.engine import NonFiniteCheckOptimWrapper

    param = torch.nn.Parameter(torch.ones(2))
    wrapper = NonFiniteCheckOptimWrapper(optimizer=torch.optim.SGD([param], lr=1.0))
    with pytest.raises(TrainingError) as info:
        wrapper.update_params((param * float('nan')).sum())
    assert isinstance(info.value, FloatingPointError)
    block = format_user_error(info.value, 'train.py')
    assert block.startswith('train.py: training error\n  Non-finite loss at ')
    assert 'optim_wrapper.optimizer.lr' in block and "on_nonfinite='skip'" in block
    with pytest.raises(ConfigError, match="optim_wrapper.on_nonfinite='x' is not supported"):
        NonFiniteCheckOptimWrapper(optimizer=torch.optim.SGD([param], lr=1.0), on_nonfinite='x')


def test_feature_files(tmp_path):
    from mmdmpt.apis import load_features
    from mmdmpt.structures import check_feature_path

    with pytest.raises(DataNotFoundError, match=f'feature file not found: {tmp_path}/f.pt'):
        load_features(str(tmp_path / 'f.pt'))
    text = tmp_path / 'text.npz'
    text.write_text('hello')
    with pytest.raises(DataError, match=f'cannot read the feature file {text}'):
        load_features(str(text))
    partial = tmp_path / 'partial.pt'
    torch.save({'feats': torch.zeros(2, 4)}, partial)
    with pytest.raises(DataError, match=r"partial.pt is not a feature file .* lacks \['pids'"):
        load_features(str(partial))
    named = tmp_path / 'feats.txt'
    named.write_text('hello')
    with pytest.raises(ConfigError, match=r'feats.txt: use a .pt \(or .pth\) or .npz file name'):
        load_features(str(named))
    with pytest.raises(ConfigError, match=f'{text} is a file, not a folder'):
        check_feature_path(str(text / 'feats.pt'))


def test_gallery_search_arguments():
    from mmdmpt.apis import GallerySearcher

    with pytest.raises(ConfigError, match='metric must be one of'):
        GallerySearcher(torch.ones(2, 3), metric='l1')
    with pytest.raises(ConfigError, match='k must be a positive int'):
        GallerySearcher(torch.ones(2, 3)).search(torch.ones(1, 3), k=0)
    with pytest.raises(ValueError) as info:  # API misuse stays a plain ValueError
        GallerySearcher(torch.ones(2, 3)).search(torch.ones(1, 3), query_pids=[1])
    assert not isinstance(info.value, MMDMPTError)


def test_scalar_logs_and_curve_pictures(tmp_path):
    from mmdmpt.visualization import ScalarKeyError, collect_curves
    from mmdmpt.visualization.curves import check_out_file

    with pytest.raises(ScalarKeyError) as info:
        collect_curves([dict(loss=1.0, step=1)], keys=['reid/mAP'])
    assert isinstance(info.value, KeyError) and isinstance(info.value, DataError)
    assert str(info.value).startswith("keys ['reid/mAP'] are not in the scalar log")
    with pytest.raises(ConfigError, match=r"unknown extension 'pgn'; expected one of .*png"):
        check_out_file(str(tmp_path / 'curves.pgn'))
    with pytest.raises(ConfigError, match='is a folder'):
        check_out_file(str(tmp_path))
    check_out_file(str(tmp_path / 'curves'))  # no extension: matplotlib writes PNG
