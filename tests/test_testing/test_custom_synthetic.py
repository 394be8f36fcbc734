"""The custom-layout writer of the synthetic generator."""

import csv
import hashlib
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest

from mmdmpt.testing import make_custom_synthetic
from mmdmpt.utils.errors import ConfigError

SMALL = dict(num_ids=6, train_ids=3, samples_per_camera=2, height=64, width=32, seed=5)


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(osp.join(dirpath, f), 'rb') as fh:
                out[osp.relpath(osp.join(dirpath, f), root)] = hashlib.md5(fh.read()).hexdigest()
    return out


def test_folder_layout_is_deterministic_with_any_names(tmp_path):
    args = dict(modalities=('rgb', 'depth', 'uv'), num_cameras=2, missing=0.3, **SMALL)
    a = make_custom_synthetic(str(tmp_path / 'a'), **args)
    make_custom_synthetic(str(tmp_path / 'b'), **args)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    assert a['modality_dirs'] == {'rgb': 'RGB', 'depth': 'DEPTH', 'uv': 'UV'}
    assert a['cues'] == {'rgb': 'rgb', 'depth': 'extra', 'uv': 'extra'}
    # 6 ids x 2 cameras x 2 samples; one query per (test id, camera)
    assert a['num_samples'] == {'train': 12, 'query': 6, 'gallery': 6}
    stems = set()
    lacking = 0
    for split in ('train', 'query', 'gallery'):
        names = [set(os.listdir(tmp_path / 'a' / split / d)) for d in ('RGB', 'DEPTH', 'UV')]
        union = set().union(*names)
        stems |= {(split, n) for n in union}
        lacking += sum(not all(n in s for s in names) for n in union)
    assert len(stems) == 24 and lacking == a['num_lacking'] > 0  # every sample has a file
    assert all(re.fullmatch(a['name_pattern'], osp.splitext(n)[0]) for _, n in stems)
    with pytest.raises(FileExistsError, match='overwrite=True'):
        make_custom_synthetic(str(tmp_path / 'a'), **args)


def test_extra_cue_tells_identities_apart(tmp_path):
    # two modality names with the extra cue: codes differ by name and by identity
    make_custom_synthetic(str(tmp_path), modalities=('depth', 'event'), num_cameras=1, **SMALL)
    read = lambda p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32)  # noqa: E731
    names = sorted(os.listdir(tmp_path / 'train' / 'DEPTH'))
    depth = [read(tmp_path / 'train' / 'DEPTH' / n) for n in names]
    event = [read(tmp_path / 'train' / 'EVENT' / n) for n in names]
    pids = [n[:4] for n in names]
    same = [
        abs(depth[i] - depth[j]).mean()
        for i in range(6)
        for j in range(6)
        if pids[i] == pids[j] and i < j
    ]
    other = [
        abs(depth[i] - depth[j]).mean() for i in range(6) for j in range(6) if pids[i] != pids[j]
    ]
    assert max(same) < min(other)  # the identity shows in the bands
    assert np.mean([abs(d - e).mean() for d, e in zip(depth, event)]) > 5  # another code per name


def test_csv_layout_without_cameras(tmp_path):
    summary = make_custom_synthetic(
        str(tmp_path), ('rgb', 'nir', 'tir', 'event'), 'csv', num_cameras=0, missing=0.2, **SMALL
    )
    assert summary['removal_rule'] == 'none' and summary['ann_file'] == 'annotations.csv'
    with open(tmp_path / 'annotations.csv') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['split', 'pid', 'camid', 'rgb', 'nir', 'tir', 'event']
    assert len(rows) == sum(summary['num_samples'].values()) == 12
    assert {r['camid'] for r in rows} == {''}
    for r in rows:
        cells = [r[m] for m in ('rgb', 'nir', 'tir', 'event')]
        assert any(cells)  # at least one modality
        assert all(osp.isfile(tmp_path / c) for c in cells if c)
    assert (
        sum(not all(r[m] for m in ('rgb', 'nir', 'tir', 'event')) for r in rows)
        == summary['num_lacking']
    )
    assert sum(r['split'] == 'query' for r in rows) == 3  # one query per test id


def test_argument_errors(tmp_path):
    with pytest.raises(ConfigError, match='unknown custom layout'):
        make_custom_synthetic(str(tmp_path), layout='tree')
    with pytest.raises(ConfigError, match='lowercase words'):
        make_custom_synthetic(str(tmp_path), modalities=('RGB',))
    with pytest.raises(ConfigError, match=r"cues\['depth'\]='sonar'"):
        make_custom_synthetic(str(tmp_path), cues={'depth': 'sonar'})
    with pytest.raises(ConfigError, match='samples_per_camera must be >= 2'):
        make_custom_synthetic(str(tmp_path), samples_per_camera=1)
