"""ReIDGallery: a gallery of one's own images, its feature cache, threshold decisions."""

import copy
import logging
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmdmpt.apis import (
    ReIDGallery,
    ReIDInferencer,
    calibrate_on_features,
    extract_dataset_features,
    save_calibration,
)
from mmdmpt.evaluation.functional import compute_distance
from mmdmpt.testing import make_custom_synthetic
from mmdmpt.utils.errors import ConfigError, DataNotFoundError

MODS = ('rgb', 'depth')


@pytest.fixture(scope='module')
def setup(common, tmp_path_factory):
    """A custom 2-modality tree (samples lacking a modality), a tiny model and its checkpoint."""
    base = tmp_path_factory.mktemp('gallery_search')
    root = str(base / 'tree')
    summary = make_custom_synthetic(
        root, MODS, num_ids=12, train_ids=6, samples_per_camera=2, num_cameras=2, missing=0.2,
        height=64, width=32, seed=4,
    )  # fmt: skip
    dataset = dict(
        type='MultiModalReIDFolder',
        data_root=root,
        split='test',
        modalities=MODS,
        modality_dirs=summary['modality_dirs'],
        name_pattern=summary['name_pattern'],
        pipeline=common.test_pipeline(),
    )
    cfg = copy.deepcopy(common.tiny_config(root))
    cfg.modalities = MODS
    cfg.model.backbone.modalities = MODS
    cfg.model.head.in_channels = None
    cfg.test_dataloader.dataset = dataset
    cfg = Config(cfg.to_dict())
    model = common.build_model(cfg)
    ckpt = common.save_checkpoint(model, str(base / 'epoch_1.pth'))
    inferencer = ReIDInferencer(cfg, ckpt, device='cpu')
    return dict(root=root, summary=summary, cfg=cfg, ckpt=ckpt, inferencer=inferencer, base=base)


def _query(root, split='query'):
    """One query sample with every modality it has on disk."""
    rgb_dir = osp.join(root, split, 'RGB')
    name = sorted(os.listdir(rgb_dir))[0]
    sample = {'rgb': osp.join(rgb_dir, name)}
    depth = osp.join(root, split, 'DEPTH', name)
    if osp.isfile(depth):
        sample['depth'] = depth
    return sample


def test_cache_is_reused_while_nothing_changes(setup, tmp_path):
    gallery_dir = str(tmp_path / 'gallery')
    shutil.copytree(osp.join(setup['root'], 'gallery'), gallery_dir)
    cache = str(tmp_path / 'cache')
    kwargs = dict(cache_dir=cache, progress=False, inferencer=setup['inferencer'])
    first = ReIDGallery(setup['cfg'], setup['ckpt'], gallery_dir, **kwargs)
    assert not first.cache_info['reused'] and osp.isfile(first.cache_info['cache_file'])
    again = ReIDGallery(setup['cfg'], setup['ckpt'], gallery_dir, **kwargs)
    assert again.cache_info == dict(first.cache_info, reused=True)
    torch.testing.assert_close(again.features['feats'], first.features['feats'])
    # ids come from the names (the config's pattern); absent modalities are ''
    assert set(first.features['pids'].tolist()) == set(setup['summary']['test_ids'])
    assert any('' in paths for paths in first.features['img_paths'])

    # a changed file, another checkpoint: extracted again
    touched = osp.join(gallery_dir, 'RGB', sorted(os.listdir(osp.join(gallery_dir, 'RGB')))[0])
    stat = os.stat(touched)
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = ReIDGallery(setup['cfg'], setup['ckpt'], gallery_dir, **kwargs)
    assert not changed.cache_info['reused']
    assert changed.cache_info['cache_file'] != first.cache_info['cache_file']
    other = str(tmp_path / 'other.pth')
    state = torch.load(setup['ckpt'], weights_only=True)
    state['meta']['epoch'] = 2
    torch.save(state, other)
    assert not ReIDGallery(setup['cfg'], other, gallery_dir, **kwargs).cache_info['reused']


def test_search_results_and_threshold_decisions(setup, tmp_path):
    gallery_dir = osp.join(setup['root'], 'gallery')
    query = _query(setup['root'])
    plain = ReIDGallery(
        setup['cfg'], setup['ckpt'], gallery_dir, cache_dir=None, progress=False,
        inferencer=setup['inferencer'],
    )  # fmt: skip
    found = plain.search([query, {'depth': query.get('depth') or query['rgb']}], k=5)
    assert [len(f['results']) for f in found] == [5, 5]
    dists = [e['distance'] for e in found[0]['results']]
    assert dists == sorted(dists) and all(e['same_identity'] is None for e in found[0]['results'])
    # the distances are those of the features
    feats = setup['inferencer'](query)
    best = found[0]['results'][0]
    expected = compute_distance(feats, plain.features['feats'][best['index']][None])
    assert best['distance'] == pytest.approx(float(expected[0, 0]), abs=1e-6)
    # a threshold between the 2nd and 3rd distance judges exactly the first two
    threshold = (dists[1] + dists[2]) / 2
    judged = ReIDGallery(
        setup['cfg'], setup['ckpt'], gallery_dir, cache_dir=None, threshold=threshold,
        progress=False, inferencer=setup['inferencer'],
    ).search(query, k=5)  # fmt: skip
    assert [e['same_identity'] for e in judged[0]['results']] == [True, True, False, False, False]
    files = plain.draw([query], found[:1], str(tmp_path / 'pictures'))
    assert len(files) == 1 and osp.getsize(files[0]) > 0
    with pytest.raises(ConfigError, match=r"unknown modality \['tir'\]"):
        plain.search({'tir': query['rgb']})
    with pytest.raises(DataNotFoundError, match='rgb image not found'):
        plain.search({'rgb': 'nowhere.jpg'})


def test_calibration_on_held_out_ids_and_compare(setup, tmp_path):
    dataset = dict(setup['cfg'].test_dataloader.dataset, split='val', val_fraction=0.5)
    features = extract_dataset_features(setup['inferencer'], dataset, progress=False)
    calibration, curve = calibrate_on_features(features, target_fmr=0.1)
    assert calibration['removal_rule'] == 'camera' and calibration['num_ids'] == 3
    assert calibration['fmr'] <= 0.1 and 0 <= calibration['tmr'] <= 1
    assert np.all(np.diff(curve['fmr']) >= 0)
    path = save_calibration(calibration, str(tmp_path / 'cal.json'))
    inferencer = ReIDInferencer(setup['cfg'], setup['ckpt'], device='cpu', threshold=path)
    assert inferencer.threshold == calibration['threshold']
    a, b = _query(setup['root']), _query(setup['root'], 'gallery')
    out = inferencer.compare(a, b)
    assert out['same_identity'] == (out['distance'] <= calibration['threshold'])
    assert inferencer.compare(a, a)['distance'] == pytest.approx(0.0, abs=1e-6)
    assert inferencer.compare(a, b, threshold=2.5)['same_identity'] is True


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_a_calibration_of_another_checkpoint_is_warned_about(tmp_path):
    from mmengine.logging import MMLogger

    from mmdmpt.apis.inference import checkpoint_threshold, file_digest

    weights = tmp_path / 'epoch_1.pth'
    weights.write_bytes(b'weights')
    calibration = dict(threshold=0.3, metric='cosine', target_fmr=0.01, fmr=0.01, tmr=0.9)
    logger, kept = MMLogger.get_current_instance(), _Kept()
    logger.addHandler(kept)
    try:
        same = dict(calibration, checkpoint_sha256=file_digest(str(weights)))
        assert checkpoint_threshold(same, 'cosine', str(weights))[0] == 0.3
        assert not kept.records
        other = dict(calibration, checkpoint_sha256='0' * 64, checkpoint='old.pth')
        value, found = checkpoint_threshold(other, 'cosine', str(weights))
        assert value == 0.3 and found['checkpoint'] == 'old.pth'
        assert len(kept.records) == 1
        assert 'another checkpoint (old.pth)' in kept.records[0].getMessage()
    finally:
        logger.removeHandler(kept)
