"""The removal rule stated explicitly ('none' for data without cameras), and match positions.

The hand example is the one of ``test_rank.py`` (3 queries x 5 gallery
samples), evaluated here without any removal:

  q0 (pid 1): order g1 g4 g0 g3 g2 (the tie g0/g3 in gallery order); matches
      g0, g2 at 3 and 5: AP = (1/3 + 2/5) / 2 = 11/30, INP = 2/5, CMC 00111.
  q1 (pid 2): order g4 g0 g1 g2 g3; matches g4, g1 at 1 and 3 (g4 shares q1's
      camera but nothing is removed): AP = (1 + 2/3) / 2 = 5/6, INP = 2/3,
      CMC 11111.
  q2 (pid 3): order g4 g3 g2 g1 g0; match g3 at 2 (kept, same camera):
      AP = INP = 1/2, CMC 01111.
  mAP = (11/30 + 5/6 + 1/2) / 3 = 17/30, mINP = (2/5 + 2/3 + 1/2) / 3 = 47/90,
  CMC = 1/3, 2/3, 1, 1, 1.
"""

import numpy as np
import pytest
import torch

from mmdmpt.evaluation.functional import (
    evaluate_distmat,
    evaluate_features,
    evaluate_rank,
)
from mmdmpt.evaluation.functional.rank import _positions_by_count

DISTMAT = np.array(
    [
        [0.3, 0.1, 0.5, 0.3, 0.2],
        [0.2, 0.2, 0.5, 0.6, 0.0],
        [0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
Q_PIDS, G_PIDS = np.array([1, 2, 3]), np.array([1, 2, 1, 3, 2])
Q_CAMS, G_CAMS = np.array([2, 1, 0]), np.array([0, 0, 1, 0, 1])
Q_SCENES, G_SCENES = np.array([0, 1, 2]), np.array([0, 1, 1, 0, 2])
NO_RULE = dict(mAP=17 / 30, mINP=47 / 90, cmc=[1 / 3, 2 / 3, 1, 1, 1], num_valid_queries=3)
CAMERA_RULE = dict(mAP=13 / 30, mINP=9 / 20, cmc=[0, 0.5, 1, 1, 1], num_valid_queries=2)


def _check(result, expected):
    assert result['mAP'] == pytest.approx(expected['mAP'], abs=1e-12)
    assert result['mINP'] == pytest.approx(expected['mINP'], abs=1e-12)
    np.testing.assert_allclose(result['cmc'], expected['cmc'], atol=1e-12)
    assert result['num_valid_queries'] == expected['num_valid_queries']


@pytest.mark.parametrize('func', [evaluate_rank, evaluate_distmat])
def test_hand_example_without_removal(func):
    _check(func(DISTMAT, Q_PIDS, G_PIDS, None, None, 5, removal_rule='none'), NO_RULE)
    # cameras may be given, nothing is removed
    _check(func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, 5, removal_rule='none'), NO_RULE)
    # the old signature keeps its automatic choice; 'camera' overrides scenes
    _check(func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, 5), CAMERA_RULE)
    with_scenes = dict(query_sceneids=Q_SCENES, gallery_sceneids=G_SCENES)
    _check(
        func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, 5, removal_rule='camera', **with_scenes),
        CAMERA_RULE,
    )


def test_features_follow_the_rule_like_the_matrix():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(20, 6)), rng.normal(size=(70, 6))
    ids = dict(
        query_pids=rng.integers(0, 4, 20),
        gallery_pids=rng.integers(0, 4, 70),
        query_camids=rng.integers(0, 2, 20),
        gallery_camids=rng.integers(0, 2, 70),
        query_sceneids=rng.integers(0, 2, 20),
        gallery_sceneids=rng.integers(0, 2, 70),
    )
    from mmdmpt.evaluation.functional import compute_distance

    dist = compute_distance(q, g)
    results = {}
    for rule in ('none', 'camera', 'scene'):
        ref = evaluate_rank(dist, max_rank=10, removal_rule=rule, **ids)
        fast = evaluate_features(q, g, max_rank=10, removal_rule=rule, chunk_size=7, **ids)
        _check(fast, ref)
        results[rule] = ref['mAP']
    assert len(set(results.values())) == 3  # the three rules differ here


def test_rule_errors():
    with pytest.raises(ValueError, match=r"removal_rule must be one of \('camera', 'scene'"):
        evaluate_rank(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, removal_rule='id')
    with pytest.raises(ValueError, match="removal_rule='scene' needs query_sceneids"):
        evaluate_distmat(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, removal_rule='scene')
    with pytest.raises(ValueError, match="needs query_camids.*removal_rule='none'"):
        evaluate_rank(DISTMAT, Q_PIDS, G_PIDS, None, None)
    with pytest.raises(ValueError, match=r'has a true match left in the gallery \(no removal'):
        evaluate_distmat(DISTMAT, [9, 9, 9], G_PIDS, None, None, removal_rule='none')


def _by_sort(dist, match):
    order = torch.sort(dist, dim=1, stable=True).indices
    rows, pos = torch.gather(match, 1, order).nonzero(as_tuple=True)
    perm = torch.sort(rows * dist.shape[1] + pos).indices
    rows, pos = rows[perm], pos[perm]
    return rows, order[rows, pos], pos


@pytest.mark.parametrize('case', ['similarity', 'huge_range', 'one_threshold', 'dense_ties'])
def test_positions_by_count_in_hard_cases(case):
    rng = np.random.default_rng(7)
    shape = (17, 400)
    match = torch.from_numpy(rng.random(shape) < 0.05)
    if case == 'similarity':
        # cosine similarities; distances 1 - s formed inside, some equal after rounding
        sim = torch.from_numpy(rng.uniform(-1, 1, shape))
        sim[:, :40] = sim[:, :1] + torch.from_numpy(rng.integers(-2, 3, (17, 40)) * 2.0**-53)
        out = _positions_by_count(sim, match, from_similarity=True)
        ref = _by_sort(torch.sub(1.0, sim), match)
    else:
        if case == 'huge_range':
            dist = np.exp(rng.uniform(-600, 600, shape)) * rng.choice([-1, 1], shape)
        elif case == 'one_threshold':  # every row's matches share one distance
            dist = rng.random(shape)
            match[:] = False
            match[:, 5:9] = True
            dist[:, 5:9] = 0.5
            dist[:, 100:110] = 0.5  # ties with the threshold, before and after the matches
        else:
            dist = rng.integers(0, 3, shape).astype(np.float64) * 1e-9 + 1.0
        dist = torch.from_numpy(dist)
        out = _positions_by_count(dist, match)
        ref = _by_sort(dist, match)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
