"""Match-threshold calibration: pairs, threshold at a target FMR, curve, files."""

import json

import numpy as np
import pytest

from mmdmpt.evaluation.functional import (
    calibrate_threshold,
    load_calibration,
    pair_distances,
    resolve_threshold,
    roc_points,
    save_calibration,
)
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError


def test_threshold_by_hand():
    # 10 non-matching distances 0.1 .. 1.0; FMR 20 % allows two of them
    nonmatch = np.arange(1, 11) / 10
    match = np.array([0.05, 0.15, 0.22, 0.5])
    out = calibrate_threshold(match, nonmatch, target_fmr=0.2)
    assert out['threshold'] == pytest.approx(0.25)  # midway between 0.2 and 0.3
    assert out['fmr'] == pytest.approx(0.2) and out['tmr'] == pytest.approx(0.75)
    assert out['num_match_pairs'] == 4 and out['num_nonmatch_pairs'] == 10
    # under one pair in ten: nothing may pass, the threshold lies under 0.1
    out = calibrate_threshold(match, nonmatch, target_fmr=0.05)
    assert out['fmr'] == 0.0 and 0.05 <= out['threshold'] < 0.1 and out['tmr'] == 0.25
    assert out['fmr_resolution'] == pytest.approx(0.1)


def test_ties_never_exceed_the_target():
    # three non-matching pairs share 0.3: a threshold at 0.3 would give FMR 50 %
    nonmatch = np.array([0.1, 0.3, 0.3, 0.3, 0.6, 0.7])
    out = calibrate_threshold([0.2], nonmatch, target_fmr=0.34)  # two pairs allowed
    assert 0.1 < out['threshold'] < 0.3 and out['fmr'] == pytest.approx(1 / 6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        nm = rng.integers(0, 20, rng.integers(5, 60)) / 20.0
        target = float(rng.uniform(0.01, 0.9))
        res = calibrate_threshold(rng.random(7), nm, target)
        assert np.mean(nm <= res['threshold']) <= target + 1e-12
        # and it is the largest such threshold on these pairs
        above = nm[nm > res['threshold']]
        if above.size:
            assert np.mean(nm <= above.min()) > target


def test_pairs_leave_out_what_the_rule_removes():
    # features on a line (Euclidean, raw): q0 id 1 cam 0; gallery ids 1, 1, 2
    q = np.array([[0.0]])
    g = np.array([[1.0], [2.0], [4.0]])
    match, other = pair_distances(q, g, [1], [1, 1, 2], metric='euclidean')
    assert sorted(match) == [1.0, 2.0] and list(other) == [4.0]
    match, other = pair_distances(q, g, [1], [1, 1, 2], [0], [0, 1, 0], metric='euclidean')
    assert list(match) == [2.0] and list(other) == [4.0]  # same id, same camera: left out


def test_roc_points_are_monotone():
    rng = np.random.default_rng(1)
    curve = roc_points(rng.normal(0.3, 0.1, 300), rng.normal(0.8, 0.1, 3000), num_points=64)
    assert np.all(np.diff(curve['thresholds']) > 0)
    assert np.all(np.diff(curve['fmr']) >= 0) and np.all(np.diff(curve['tmr']) >= 0)
    assert curve['fmr'][0] == 0 and curve['tmr'][-1] == 1 and curve['fmr'][-1] == 1
    np.testing.assert_allclose(curve['fnmr'], 1 - curve['tmr'])


def test_files_and_resolution(tmp_path):
    cal = dict(calibrate_threshold([0.1, 0.2], np.linspace(0.3, 1, 50), 0.02), metric='cosine')
    path = save_calibration(cal, str(tmp_path / 'cal.json'))
    assert load_calibration(path)['threshold'] == cal['threshold']
    assert resolve_threshold(path, 'cosine') == (cal['threshold'], load_calibration(path))
    assert resolve_threshold(0.4) == (0.4, None) and resolve_threshold(None) == (None, None)
    with pytest.raises(ConfigError, match="made with metric='cosine'.*'euclidean'"):
        resolve_threshold(path, 'euclidean')
    with pytest.raises(DataNotFoundError, match='calibration file not found'):
        load_calibration(str(tmp_path / 'none.json'))
    (tmp_path / 'bad.json').write_text(json.dumps({'threshold': 0.2}))
    with pytest.raises(DataError, match=r"not a calibration file: it lacks \['metric'"):
        load_calibration(str(tmp_path / 'bad.json'))
    (tmp_path / 'text.json').write_text('threshold = 0.2')
    with pytest.raises(DataError, match='cannot read the calibration file'):
        load_calibration(str(tmp_path / 'text.json'))
    with pytest.raises(ConfigError, match=r'target_fmr must be in \(0, 1\)'):
        calibrate_threshold([0.1], [0.2], 1.5)
    with pytest.raises(DataError, match='no matching pairs to calibrate on'):
        calibrate_threshold([], [0.2], 0.01)
    with pytest.raises(ConfigError, match='threshold must be a finite number'):
        resolve_threshold(float('nan'))
