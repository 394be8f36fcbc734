import itertools

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate

from mmdmpt.apis import (
    FEATURE_KEYS,
    ReIDInferencer,
    extract_dataset_features,
    load_features,
    save_features,
    split_query_gallery,
)
from mmdmpt.utils.errors import CheckpointError

D = 64  # backbone width of the tiny CLIP


def _read_rgb(path):
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def cfg(common, tree):
    return common.tiny_config(tree)


@pytest.fixture(scope='module')
def inferencer(cfg):
    torch.manual_seed(0)
    return ReIDInferencer(cfg, device='cpu')


@pytest.fixture(scope='module')
def features(inferencer):
    return extract_dataset_features(inferencer, progress=False)


def _sample(paths):
    return dict(zip(('rgb', 'nir', 'tir'), paths))


def test_paths_arrays_and_dataset_features_agree(inferencer, features):
    paths = features['img_paths'][:3]
    by_path = inferencer([_sample(p) for p in paths], batch_size=2)
    arrays = [
        {
            m: _read_rgb(p) if m == 'rgb' else cv2.imread(p, cv2.IMREAD_GRAYSCALE)
            for m, p in s.items()
        }
        for s in map(_sample, paths)
    ]
    by_array = inferencer(arrays)
    assert by_path.shape == (3, 3 * D) and by_path.dtype == torch.float32
    torch.testing.assert_close(by_path, by_array, rtol=0, atol=1e-6)
    torch.testing.assert_close(by_path, features['feats'][:3], rtol=0, atol=1e-5)
    torch.testing.assert_close(by_path.norm(dim=1), torch.ones(3))
    # One dict counts as a list of one; NumPy output on request.
    single = inferencer(_sample(paths[0]), return_numpy=True)
    assert isinstance(single, np.ndarray) and single.shape == (1, 3 * D)


@pytest.mark.parametrize('keep', [k for n in (1, 2) for k in itertools.combinations('012', n)])
def test_any_subset_of_modalities(inferencer, features, keep):
    """Without bind prompts, modalities do not interact: present slices are unchanged."""
    mods = ('rgb', 'nir', 'tir')
    paths = features['img_paths'][5]
    full = inferencer(_sample(paths), normalize=False)[0]
    sample = {mods[int(i)]: paths[int(i)] for i in keep}
    part = inferencer(sample, normalize=False)[0]
    for i, m in enumerate(mods):
        sl = slice(i * D, (i + 1) * D)
        if m in sample:
            torch.testing.assert_close(part[sl], full[sl], rtol=0, atol=1e-5)
        else:
            assert torch.equal(part[sl], torch.zeros(D))


def test_missing_modalities_of_a_dataset(inferencer):
    feats = extract_dataset_features(inferencer, missing='nir', normalize=False, progress=False)
    assert feats['missing'] == ['nir']
    assert feats['modality_mask'][:, 1].sum() == 0 and feats['modality_mask'][:, [0, 2]].all()
    assert torch.equal(feats['feats'][:, D : 2 * D], torch.zeros(len(feats['pids']), D))
    paths = feats['img_paths'][7]
    ref = inferencer({'rgb': paths[0], 'tir': paths[2]}, normalize=False)[0]
    torch.testing.assert_close(feats['feats'][7], ref, rtol=0, atol=1e-5)


def test_dataset_features_metadata(features):
    assert set(FEATURE_KEYS) <= set(features)
    n = len(features['pids'])
    assert n == 48 and features['feats'].shape == (n, 3 * D)
    assert int(features['is_query'].sum()) == 24  # RGBNT201: query = gallery = test/
    assert features['sample_idx'].tolist() == list(range(n))
    assert not features['has_scenes'] and (features['sceneids'] == -1).all()
    assert features['modalities'] == ['rgb', 'nir', 'tir']
    assert features['dataset_name'] == 'RGBNT201'
    assert features['img_paths'][0][1].endswith('.jpg') and '/NI/' in features['img_paths'][0][1]
    query, gallery = split_query_gallery(features)
    assert len(query['pids']) == len(gallery['pids']) == 24 and query['is_query'].all()
    assert len(query['img_paths']) == 24


@pytest.mark.parametrize('ext', ['.pt', '.npz'])
def test_feature_files_round_trip(features, tmp_path, ext):
    path = str(tmp_path / f'feats{ext}')
    save_features(features, path)
    if ext == '.pt':
        raw = torch.load(path, weights_only=True)  # tensors and primitives only
        # the required keys, plus the optional removal rule the dataset recorded
        assert set(raw) == set(FEATURE_KEYS) | {'removal_rule'}
    back = load_features(path)
    assert back['removal_rule'] == features['removal_rule'] == 'camera'
    for key in FEATURE_KEYS:
        if isinstance(features[key], torch.Tensor):
            assert torch.equal(back[key], features[key]), key
        else:
            assert back[key] == features[key], key
    with pytest.raises(ValueError, match='.pt'):
        save_features(features, str(tmp_path / 'feats.json'))
    with pytest.raises(FileNotFoundError, match='not found'):
        load_features(str(tmp_path / 'nothing.pt'))


def test_input_errors(inferencer, tree):
    img = np.zeros((64, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"unknown modality \['depth'\].*\['rgb', 'nir', 'tir'\]"):
        inferencer({'rgb': img, 'depth': img})
    with pytest.raises(ValueError, match='at least one'):
        inferencer({'nir': None})
    with pytest.raises(TypeError, match='path or a uint8 array'):
        inferencer({'rgb': 3})
    with pytest.raises(TypeError, match='uint8'):
        inferencer({'rgb': img.astype(np.float32)})
    with pytest.raises(ValueError, match='HxWx3'):
        inferencer({'rgb': np.zeros((64, 32, 4), np.uint8)})
    with pytest.raises(FileNotFoundError, match='tir image file not found'):
        inferencer({'tir': f'{tree}/nothing.jpg'})
    with pytest.raises(TypeError, match='dict modality'):
        inferencer(['a.jpg'])


def test_full_and_trainable_only_checkpoints(common, tree, tmp_path, features):
    clip = common.write_clip_weights(str(tmp_path / 'clip.pt'))
    cfg = common.tiny_config(tree, pretrained=clip)
    ref = common.build_model(cfg, seed=1)
    full = common.save_checkpoint(ref, str(tmp_path / 'full.pth'))
    part = common.save_checkpoint(ref, str(tmp_path / 'trainable.pth'), trainable_only=True)
    paths = features['img_paths'][:2]
    with torch.no_grad():
        inf = ReIDInferencer(cfg, device='cpu')
        batch = default_collate([inf.preprocess(_sample(p)) for p in paths])
        data = ref.data_preprocessor(batch, False)
        expected = torch.nn.functional.normalize(ref(**data, mode='tensor'), dim=1)

    torch.manual_seed(2)  # different random prompts: equality proves the loading
    for weights in (full, part):
        got = ReIDInferencer(cfg, weights, device='cpu')([_sample(p) for p in paths])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # A full checkpoint carries the CLIP weights: the CLIP file may be gone.
    missing_clip = dict(model=dict(backbone=dict(pretrained=str(tmp_path / 'gone.pt'))))
    got = ReIDInferencer(cfg, full, device='cpu', cfg_options=missing_clip)
    torch.testing.assert_close(got([_sample(p) for p in paths]), expected, rtol=0, atol=1e-6)
    # A trainable-only one needs it, and says so.
    with pytest.raises(CheckpointError, match='trainable-only.*gone.pt'):
        ReIDInferencer(cfg, part, device='cpu', cfg_options=missing_clip)


def test_unsafe_checkpoint_is_refused(cfg, tmp_path):
    path = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {}, 'hook': _Unsafe()}, path)
    with pytest.raises(CheckpointError, match='Refused to load'):
        ReIDInferencer(cfg, str(path), device='cpu')


class _Unsafe:
    pass
