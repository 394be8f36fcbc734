"""The chunked, vectorised evaluation agrees with the reference loop."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmdmpt.evaluation.functional import (
    auto_chunk_size,
    compute_distance,
    evaluate_distmat,
    evaluate_features,
    evaluate_rank,
    search_topk,
)


def _assert_same(a, b, tol=1e-12):
    assert a['num_valid_queries'] == b['num_valid_queries']
    assert a['num_invalid_queries'] == b['num_invalid_queries']
    assert a['mAP'] == pytest.approx(b['mAP'], abs=tol)
    assert a['mINP'] == pytest.approx(b['mINP'], abs=tol)
    np.testing.assert_allclose(a['cmc'], b['cmc'], atol=tol)


def _case(seed, num_q=37, num_g=150, dim=8, ties=False, scenes=False):
    """Random ids and features; with ``ties``, features come from a pool of 5
    prototypes so that many distances tie exactly."""
    rng = np.random.default_rng(seed)
    if ties:
        pool = rng.normal(size=(5, dim))
        q_feats, g_feats = pool[rng.integers(0, 5, num_q)], pool[rng.integers(0, 5, num_g)]
    else:
        q_feats, g_feats = rng.normal(size=(num_q, dim)), rng.normal(size=(num_g, dim))
    ids = dict(
        query_pids=rng.integers(0, 6, num_q),
        gallery_pids=rng.integers(0, 6, num_g),
        query_camids=rng.integers(0, 3, num_q),
        gallery_camids=rng.integers(0, 3, num_g),
    )
    if scenes:
        ids.update(
            query_sceneids=rng.integers(0, 4, num_q), gallery_sceneids=rng.integers(0, 4, num_g)
        )
    return q_feats, g_feats, ids


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('scenes', [False, True])
@pytest.mark.parametrize('chunk_size', [1, 5, 37, None])
def test_agrees_with_reference(metric, ties, scenes, chunk_size):
    q_feats, g_feats, ids = _case(3, ties=ties, scenes=scenes)
    ref = evaluate_rank(compute_distance(q_feats, g_feats, metric), max_rank=20, **ids)
    fast = evaluate_features(
        q_feats, g_feats, max_rank=20, metric=metric, chunk_size=chunk_size, **ids
    )
    _assert_same(fast, ref)
    # and the vectorised evaluation of a given matrix
    _assert_same(
        evaluate_distmat(compute_distance(q_feats, g_feats, metric), max_rank=20, **ids), ref
    )


def test_integer_features_exact_ties():
    # Small integer features: every distance is exact, so ties are exact in
    # any computation order.
    rng = np.random.default_rng(0)
    q_feats = rng.integers(-1, 2, (30, 4)).astype(np.float32)
    g_feats = rng.integers(-1, 2, (90, 4)).astype(np.float32)
    _, _, ids = _case(1, 30, 90)
    ref = evaluate_rank(compute_distance(q_feats, g_feats, 'euclidean'), max_rank=10, **ids)
    for chunk_size in (1, 4, 29, 30, 1000):
        fast = evaluate_features(
            q_feats, g_feats, max_rank=10, metric='euclidean', chunk_size=chunk_size, **ids
        )
        _assert_same(fast, ref)


def test_torch_inputs_match_numpy_inputs():
    q_feats, g_feats, ids = _case(5, ties=True, scenes=True)
    ref = evaluate_features(q_feats, g_feats, **ids)
    tensors = {k: torch.from_numpy(v) for k, v in ids.items()}
    fast = evaluate_features(
        torch.from_numpy(q_feats).float(), torch.from_numpy(g_feats), chunk_size=7, **tensors
    )
    # float32 vs float64 query features: the same ranking here
    _assert_same(fast, ref)


def test_random_continuous_features_within_1e6():
    q_feats, g_feats, ids = _case(11, num_q=120, num_g=600, dim=32)
    ref = evaluate_rank(compute_distance(q_feats, g_feats), **ids)
    _assert_same(evaluate_features(q_feats, g_feats, chunk_size=16, **ids), ref, tol=1e-6)


def test_duplicate_gallery_features_tie_exactly():
    # Identical gallery rows get bit-identical distances, so their tie keeps
    # gallery order even though a matrix product may round positions apart.
    rng = np.random.default_rng(2)
    proto = rng.normal(size=(3, 64))
    g_feats = proto[rng.integers(0, 3, 257)]
    dist = compute_distance(rng.normal(size=(9, 64)), g_feats).numpy()
    for p in range(3):
        block = dist[:, (g_feats == proto[p]).all(1)]
        assert (block == block[:, :1]).all()


def test_euclidean_is_plain_and_cosine_is_one_minus_cos():
    q = np.array([[3.0, 4.0]])
    g = np.array([[0.0, 0.0], [3.0, 0.0], [-3.0, -4.0]])
    np.testing.assert_allclose(compute_distance(q, g, 'euclidean').numpy(), [[5, 4, 10]])
    np.testing.assert_allclose(
        compute_distance(q, g, 'cosine').numpy(), [[1, 1 - 0.6, 2]], atol=1e-12
    )


def test_auto_chunk_size_budget():
    assert auto_chunk_size(50000) == 134
    assert auto_chunk_size(10**9) == 1


def test_feature_errors():
    q_feats, g_feats, ids = _case(0)
    with pytest.raises(ValueError, match='Feature dims differ: query features have dim 8'):
        evaluate_features(q_feats, g_feats[:, :4], **ids)
    with pytest.raises(ValueError, match='metric must be one of'):
        evaluate_features(q_feats, g_feats, metric='manhattan', **ids)
    with pytest.raises(ValueError, match='chunk_size must be a positive int'):
        evaluate_features(q_feats, g_feats, chunk_size=0, **ids)
    bad = q_feats.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        evaluate_features(bad, g_feats, **ids)
    with pytest.raises(ValueError, match='query_pids has 36 entries, expected 37'):
        evaluate_features(q_feats, g_feats, **{**ids, 'query_pids': ids['query_pids'][1:]})


def test_search_topk_matches_full_sort():
    q_feats, g_feats, _ = _case(4, ties=True)
    full = compute_distance(q_feats, g_feats)
    values, order = torch.sort(full, dim=1, stable=True)
    dist, index = search_topk(q_feats, g_feats, k=10, chunk_size=6)
    assert torch.equal(index, order[:, :10])
    torch.testing.assert_close(dist, values[:, :10])
    dist, index = search_topk(q_feats, g_feats, k=10**6)  # cut to the gallery size
    assert index.shape == (37, 150)
    with pytest.raises(ValueError, match='k must be a positive int'):
        search_topk(q_feats, g_feats, k=0)


# ------------------------------ properties ---------------------------------
@st.composite
def _small_problem(draw, distinct=False):
    num_q = draw(st.integers(1, 6))
    num_g = draw(st.integers(1, 10))
    if distinct:
        perm = draw(st.permutations(range(num_q * num_g)))
        dist = np.array(perm, dtype=np.float64).reshape(num_q, num_g)
    else:  # few distinct values: many ties
        dist = draw(arrays(np.float64, (num_q, num_g), elements=st.sampled_from([0.0, 1.0, 2.0])))
    ints = lambda n, hi: draw(arrays(np.int64, n, elements=st.integers(0, hi)))  # noqa: E731
    ids = dict(
        query_pids=ints(num_q, 2),
        gallery_pids=ints(num_g, 2),
        query_camids=ints(num_q, 1),
        gallery_camids=ints(num_g, 1),
    )
    if draw(st.booleans()):
        ids.update(query_sceneids=ints(num_q, 1), gallery_sceneids=ints(num_g, 1))
    return dist, ids


def _evaluate_or_none(func, dist, ids, **kwargs):
    try:
        return func(dist, max_rank=4, **ids, **kwargs)
    except ValueError as err:
        assert 'has a true match left' in str(err)
        return None


@settings(max_examples=80, deadline=None, database=None)
@given(problem=_small_problem(), chunk_size=st.integers(1, 7))
def test_property_reference_and_vectorised_agree(problem, chunk_size):
    dist, ids = problem
    ref = _evaluate_or_none(evaluate_rank, dist, ids)
    fast = _evaluate_or_none(evaluate_distmat, dist, ids, chunk_size=chunk_size)
    assert (ref is None) == (fast is None)
    if ref is None:
        return
    _assert_same(fast, ref)
    assert 0.0 < ref['mAP'] <= 1.0 and 0.0 < ref['mINP'] <= 1.0
    assert np.all(np.diff(ref['cmc']) >= 0) and 0.0 <= ref['cmc'][0] and ref['cmc'][-1] <= 1.0
    assert ref['num_valid_queries'] + ref['num_invalid_queries'] == dist.shape[0]


@settings(max_examples=60, deadline=None, database=None)
@given(problem=_small_problem(distinct=True), data=st.data())
def test_property_gallery_permutation_invariance(problem, data):
    dist, ids = problem
    ref = _evaluate_or_none(evaluate_rank, dist, ids)
    perm = np.array(data.draw(st.permutations(range(dist.shape[1]))), dtype=np.int64)
    permuted = {k: (v[perm] if k.startswith('gallery') else v) for k, v in ids.items()}
    out = _evaluate_or_none(evaluate_rank, dist[:, perm], permuted)
    assert (ref is None) == (out is None)
    if ref is not None:
        _assert_same(out, ref)


# ------------------------- match positions, two ways ------------------------
def _positions_by_sort(dist, match):
    """Reference for ``_positions_by_count``: a full stable sort of each row.

    Returns ``(rows, cols, pos)``: each true match (query row, gallery column)
    with its 0-based position in the row's stable ascending order, sorted by
    (row, position).
    """
    order = torch.sort(dist, dim=1, stable=True).indices
    rows, pos = torch.gather(match, 1, order).nonzero(as_tuple=True)
    perm = torch.sort(rows * dist.shape[1] + pos).indices  # explicit (row, pos) order
    rows, pos = rows[perm], pos[perm]
    return rows, order[rows, pos], pos


@pytest.mark.parametrize('levels', [1, 2, 3, 50, None])
def test_positions_by_count_equal_positions_by_sort(levels):
    from mmdmpt.evaluation.functional.rank import _positions_by_count

    rng = np.random.default_rng(levels or 0)
    # levels=1: every distance ties; None: continuous values
    if levels is None:
        dist = rng.random((23, 301))
    else:
        dist = rng.integers(0, levels, (23, 301)).astype(np.float64)
    match = torch.from_numpy(rng.random((23, 301)) < 0.1)
    match[4] = False  # a query without any match
    match[5] = True  # a query matching everything
    dist = torch.from_numpy(dist)
    by_count = _positions_by_count(dist, match)
    by_sort = _positions_by_sort(dist, match)
    for a, b in zip(by_count, by_sort):
        assert torch.equal(a, b)


@settings(max_examples=60, deadline=None, database=None)
@given(problem=_small_problem())
def test_property_positions_agree(problem):
    from mmdmpt.evaluation.functional.rank import _positions_by_count

    dist, ids = problem
    match = torch.from_numpy(ids['query_pids'][:, None] == ids['gallery_pids'][None, :])
    dist = torch.from_numpy(dist)
    for a, b in zip(_positions_by_count(dist, match), _positions_by_sort(dist, match)):
        assert torch.equal(a, b)


def test_infinite_distances_rank_last_like_the_reference():
    dist = np.array([[np.inf, 1.0, np.inf, 0.5, -np.inf]])
    args = ([1], [1, 2, 1, 1, 3], [0], [1, 1, 1, 1, 1])
    _assert_same(evaluate_distmat(dist, *args, max_rank=5), evaluate_rank(dist, *args, max_rank=5))
