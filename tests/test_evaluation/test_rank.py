"""Hand-worked checks of the ReID ranking metrics and their input validation."""

import numpy as np
import pytest
import torch

from mmdmpt.evaluation.functional import evaluate_distmat, evaluate_rank

# ---------------------------------------------------------------------------
# The worked example: 3 queries x 5 gallery samples.
#
#   gallery   g0   g1   g2   g3   g4
#   pid        1    2    1    3    2
#   camid      0    0    1    0    1
#   sceneid    0    1    1    0    2
#
#   query   pid camid sceneid   distances to g0..g4
#   q0        1     2       0   0.3  0.1  0.5  0.3  0.2
#   q1        2     1       1   0.2  0.2  0.5  0.6  0.0
#   q2        3     0       2   0.5  0.4  0.3  0.2  0.1
#
# Camera rule (remove same id AND same camera):
#   q0: stable order g1(.1) g4(.2) g0(.3) g3(.3) g2(.5) -- the tie g0/g3 keeps
#       gallery order, so g0 comes first. No gallery sample has camera 2:
#       nothing removed. True matches (pid 1) g0, g2 at positions 3 and 5.
#       AP = (1/3 + 2/5) / 2 = 11/30, INP = 2/5, CMC = 0 0 1 1 1.
#   q1: order g4(.0) g0(.2) g1(.2) g2(.5) g3(.6); g4 has pid 2 and camera 1
#       like q1: removed. Kept ranking g0 g1 g2 g3, the match g1 (after g0 by
#       the tie rule) at position 2. AP = 1/2, INP = 1/2, CMC = 0 1 1 1 1
#       (the kept gallery has 4 samples, max_rank 5: the curve stays 1).
#   q2: its only match g3 has camera 0 like q2: removed, no true match left,
#       the query is skipped.
#   mAP  = (11/30 + 1/2) / 2 = 13/30
#   mINP = (2/5 + 1/2) / 2 = 9/20
#   CMC  = mean(00111, 01111) = 0, .5, 1, 1, 1      valid 2, invalid 1
#
# Scene rule (remove same id AND same scene, whatever the camera):
#   q0 (scene 0): g0 (pid 1, scene 0) removed. Kept g1 g4 g3 g2, match g2 at 4.
#       AP = 1/4, INP = 1/4, CMC = 0 0 0 1 1.
#   q1 (scene 1): g1 (pid 2, scene 1) removed; g4 shares q1's camera but not
#       its scene: kept, and first. Kept g4 g0 g2 g3. AP = 1, INP = 1,
#       CMC = 1 1 1 1 1.
#   q2 (scene 2): g3 (scene 0) is kept this time. Order g4 g3 g2 g1 g0, match
#       at 2: AP = 1/2, INP = 1/2, CMC = 0 1 1 1 1.
#   mAP = mINP = (1/4 + 1 + 1/2) / 3 = 7/12
#   CMC = 1/3, 2/3, 2/3, 1, 1                       valid 3, invalid 0
# ---------------------------------------------------------------------------
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

CAMERA_RULE = dict(
    mAP=13 / 30, mINP=9 / 20, cmc=[0, 0.5, 1, 1, 1], num_valid_queries=2, num_invalid_queries=1
)
SCENE_RULE = dict(
    mAP=7 / 12,
    mINP=7 / 12,
    cmc=[1 / 3, 2 / 3, 2 / 3, 1, 1],
    num_valid_queries=3,
    num_invalid_queries=0,
)


def _check(result, expected):
    assert result['mAP'] == pytest.approx(expected['mAP'], abs=1e-12)
    assert result['mINP'] == pytest.approx(expected['mINP'], abs=1e-12)
    np.testing.assert_allclose(result['cmc'], expected['cmc'], atol=1e-12)
    assert result['num_valid_queries'] == expected['num_valid_queries']
    assert result['num_invalid_queries'] == expected['num_invalid_queries']


@pytest.mark.parametrize('func', [evaluate_rank, evaluate_distmat])
def test_hand_example_camera_rule(func):
    _check(func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5), CAMERA_RULE)


@pytest.mark.parametrize('func', [evaluate_rank, evaluate_distmat])
def test_hand_example_scene_rule(func):
    result = func(
        DISTMAT,
        Q_PIDS,
        G_PIDS,
        Q_CAMS,
        G_CAMS,
        max_rank=5,
        query_sceneids=Q_SCENES,
        gallery_sceneids=G_SCENES,
    )
    _check(result, SCENE_RULE)


@pytest.mark.parametrize('chunk_size', [1, 2, 3, None])
def test_hand_example_chunked(chunk_size):
    result = evaluate_distmat(
        torch.from_numpy(DISTMAT), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5, chunk_size=chunk_size
    )
    _check(result, CAMERA_RULE)


@pytest.mark.parametrize('func', [evaluate_rank, evaluate_distmat])
def test_max_rank_shorter_and_longer_than_gallery(func):
    short = func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=2)
    np.testing.assert_allclose(short['cmc'], [0, 0.5])
    assert short['mAP'] == pytest.approx(13 / 30)
    long = func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)
    assert long['cmc'].shape == (50,)
    np.testing.assert_allclose(long['cmc'][2:], 1.0)  # padded past the 4-5 kept samples


@pytest.mark.parametrize('func', [evaluate_rank, evaluate_distmat])
def test_float32_and_torch_inputs(func):
    result = func(
        torch.from_numpy(DISTMAT).float(),
        torch.from_numpy(Q_PIDS),
        G_PIDS.tolist(),
        Q_CAMS,
        torch.from_numpy(G_CAMS),
        max_rank=5,
    )
    _check(result, CAMERA_RULE)


def test_ties_follow_gallery_order_not_match_status():
    # All distances equal: the ranking is the gallery order itself.
    dist = np.zeros((1, 4))
    result = evaluate_rank(dist, [7], [1, 7, 2, 7], [0], [1, 1, 1, 1], max_rank=4)
    # matches at positions 2 and 4: AP = (1/2 + 2/4) / 2, INP = 2/4
    assert result['mAP'] == pytest.approx(0.5)
    assert result['mINP'] == pytest.approx(0.5)
    np.testing.assert_allclose(result['cmc'], [0, 1, 1, 1])


@pytest.mark.parametrize('func', [evaluate_rank, evaluate_distmat])
class TestErrors:
    def test_distmat_shape(self, func):
        with pytest.raises(ValueError, match=r'distmat has shape \(3, 4\).*expected \(3, 5\)'):
            func(DISTMAT[:, :4], Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)

    def test_distmat_not_2d(self, func):
        with pytest.raises(ValueError, match='distmat must be 2-D'):
            func(DISTMAT.reshape(-1), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)

    def test_id_length(self, func):
        with pytest.raises(ValueError, match='gallery_camids has 4 entries, expected 5'):
            func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS[:4])

    def test_nan(self, func):
        dist = DISTMAT.copy()
        dist[1, 2] = np.nan
        with pytest.raises(ValueError, match='NaN'):
            func(dist, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)

    @pytest.mark.parametrize('which', ['query_sceneids', 'gallery_sceneids'])
    def test_only_one_scene_array(self, func, which):
        scenes = Q_SCENES if which == 'query_sceneids' else G_SCENES
        with pytest.raises(ValueError, match=f'Only {which} was given'):
            func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, **{which: scenes})

    def test_max_rank(self, func):
        with pytest.raises(ValueError, match='max_rank must be >= 1, got 0'):
            func(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=0)

    def test_no_valid_query(self, func):
        with pytest.raises(ValueError, match='None of the 1 queries has a true match left'):
            func(DISTMAT[2:], Q_PIDS[2:], G_PIDS, Q_CAMS[2:], G_CAMS)

    def test_empty_query_and_gallery(self, func):
        with pytest.raises(ValueError, match='no query samples'):
            func(np.zeros((0, 5)), [], G_PIDS, [], G_CAMS)
        with pytest.raises(ValueError, match='no gallery samples'):
            func(np.zeros((3, 0)), Q_PIDS, [], Q_CAMS, [])

    def test_non_integer_ids(self, func):
        with pytest.raises(TypeError, match='query_pids must hold integers'):
            func(DISTMAT, np.array([0.5, 1, 2]), G_PIDS, Q_CAMS, G_CAMS)
