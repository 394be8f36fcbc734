"""k-reciprocal re-ranking: a known fix, a dense transcription, consistency."""

import numpy as np
import pytest
import torch

from mmdmpt.evaluation.functional import (
    compute_distance,
    evaluate_rank,
    re_ranking,
    re_ranking_from_features,
)


def _blocks(q_feats, g_feats, metric='euclidean'):
    return (
        compute_distance(q_feats, g_feats, metric).numpy(),
        compute_distance(q_feats, q_feats, metric).numpy(),
        compute_distance(g_feats, g_feats, metric).numpy(),
    )


def _dense_reference(dist_all, num_query, k1, k2, lambda_value):
    """Slow, dense, set-based transcription of the paper's steps."""
    d = np.clip(dist_all.astype(np.float64), 0, None)
    d = d / d.max(axis=1, keepdims=True)
    total = d.shape[0]
    ranking = np.argsort(d, axis=1, kind='stable')

    def neighbours(p, k):
        return set(ranking[p, : k + 1].tolist())

    def reciprocal(p, k):
        return {g for g in neighbours(p, k) if p in neighbours(g, k)}

    enc = np.zeros((total, total))
    for p in range(total):
        base = reciprocal(p, k1)
        expanded = base | {p}
        for q in base:
            half = reciprocal(q, (k1 + 1) // 2)
            if 3 * len(base & half) >= 2 * len(half):
                expanded |= half
        cols = sorted(expanded)
        enc[p, cols] = np.exp(-d[p, cols])
        enc[p] /= enc[p].sum()
    if k2 > 1:
        enc = np.stack([enc[ranking[p, :k2]].mean(axis=0) for p in range(total)])
    jaccard = np.zeros((num_query, total - num_query))
    for i in range(num_query):
        for j in range(total - num_query):
            a, b = enc[i], enc[num_query + j]
            jaccard[i, j] = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
    return (1 - lambda_value) * jaccard + lambda_value * d[:num_query, num_query:]


# One query of identity A at the origin, in a tight group of A samples; a
# single B sample is the query's nearest neighbour, but its own neighbours are
# the other B samples, so it is not a k-reciprocal neighbour of the query.
QUERY = np.array([[0.0, 0.0]])
GALLERY = np.array(
    [[0.5, 0], [0.25, 0.45], [0.27, -0.45], [-0.4, 0], [-0.6, 0], [-0.55, 0.1], [-0.55, -0.1]]
)
G_PIDS = np.array([0, 0, 0, 1, 1, 1, 1])  # identity A = 0, B = 1


def test_rerank_fixes_a_wrong_rank1():
    dist = compute_distance(QUERY, GALLERY, 'euclidean').numpy()
    assert dist.argmin() == 3  # the B sample: a wrong rank-1
    reranked = re_ranking(*_blocks(QUERY, GALLERY), k1=3, k2=1, lambda_value=0.3)
    assert G_PIDS[reranked.argmin()] == 0
    # The B sample shares no k-reciprocal neighbour with the query: Jaccard
    # distance 1; its original distance 0.4 over the row maximum 0.6.
    assert reranked[0, 3] == pytest.approx(0.7 * 1 + 0.3 * 0.4 / 0.6, abs=1e-6)
    before = evaluate_rank(dist, [0], G_PIDS, [0], np.ones(7, int), max_rank=1)
    after = evaluate_rank(reranked, [0], G_PIDS, [0], np.ones(7, int), max_rank=1)
    assert before['cmc'][0] == 0 and after['cmc'][0] == 1
    assert after['mAP'] > before['mAP']


@pytest.mark.parametrize('k1,k2,lambda_value', [(3, 1, 0.3), (5, 3, 0.3), (20, 6, 0.3), (4, 9, 0)])
def test_matches_dense_transcription(k1, k2, lambda_value):
    rng = np.random.default_rng(k1 * 10 + k2)
    q_feats, g_feats = rng.normal(size=(9, 6)), rng.normal(size=(25, 6))
    blocks = _blocks(q_feats, g_feats)
    dist_all = np.block([[blocks[1], blocks[0]], [blocks[0].T, blocks[2]]])
    expected = _dense_reference(dist_all, 9, k1, k2, lambda_value)
    out = re_ranking(*blocks, k1=k1, k2=k2, lambda_value=lambda_value)
    assert out.shape == (9, 25) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=2e-6)


def test_from_features_equals_blocks_and_consistency():
    rng = np.random.default_rng(7)
    q_feats, g_feats = rng.normal(size=(12, 8)), rng.normal(size=(40, 8))
    out = re_ranking_from_features(q_feats, g_feats, k1=6, k2=3, metric='euclidean', chunk_size=5)
    np.testing.assert_allclose(out, re_ranking(*_blocks(q_feats, g_feats), k1=6, k2=3), atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1
    # lambda = 1 keeps the original ranking (rows are only rescaled)
    orig = compute_distance(q_feats, g_feats, 'euclidean').numpy()
    only_orig = re_ranking_from_features(q_feats, g_feats, lambda_value=1.0, metric='euclidean')
    np.testing.assert_array_equal(only_orig.argsort(1), orig.argsort(1))
    # permuting the gallery permutes the columns; permuting queries the rows
    perm_g, perm_q = rng.permutation(40), rng.permutation(12)
    permuted = re_ranking_from_features(
        q_feats[perm_q], g_feats[perm_g], k1=6, k2=3, metric='euclidean'
    )
    np.testing.assert_allclose(permuted, out[perm_q][:, perm_g], atol=1e-6)
    # the Jaccard part (lambda = 0) is symmetric in the two sides
    jac = re_ranking_from_features(q_feats, g_feats, k1=6, k2=3, lambda_value=0.0)
    jac_t = re_ranking_from_features(g_feats, q_feats, k1=6, k2=3, lambda_value=0.0)
    np.testing.assert_allclose(jac, jac_t.T, atol=1e-6)


def test_cosine_equals_squared_euclidean_on_normalised_features():
    rng = np.random.default_rng(3)
    q_feats, g_feats = rng.normal(size=(10, 5)), rng.normal(size=(30, 5))
    q_n = q_feats / np.linalg.norm(q_feats, axis=1, keepdims=True)
    g_n = g_feats / np.linalg.norm(g_feats, axis=1, keepdims=True)
    squared = [b**2 for b in _blocks(q_n, g_n, 'euclidean')]
    out = re_ranking_from_features(torch.from_numpy(q_feats), g_feats, k1=5, k2=2)
    np.testing.assert_allclose(out, re_ranking(*squared, k1=5, k2=2), atol=1e-5)
    half = re_ranking_from_features(q_feats, g_feats, k1=5, k2=2, dtype='float16')
    assert np.abs(half - out).max() < 5e-3


def test_errors():
    q_g, q_q, g_g = _blocks(QUERY, GALLERY)
    with pytest.raises(MemoryError, match=r'\(8, 8\) matrix.*above max_samples=5'):
        re_ranking(q_g, q_q, g_g, max_samples=5)
    with pytest.raises(MemoryError, match='max_samples=5'):
        re_ranking_from_features(QUERY, GALLERY, max_samples=5)
    with pytest.raises(ValueError, match=r'g_g_dist has shape \(6, 6\), expected \(7, 7\)'):
        re_ranking(q_g, q_q, g_g[:6, :6])
    with pytest.raises(ValueError, match='lambda_value must be in'):
        re_ranking(q_g, q_q, g_g, lambda_value=1.5)
    with pytest.raises(ValueError, match='k1 must be a positive int'):
        re_ranking(q_g, q_q, g_g, k1=0)
    with pytest.raises(ValueError, match='dtype must be one of'):
        re_ranking(q_g, q_q, g_g, dtype='int8')
    bad = q_g.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match='q_g_dist contains NaN'):
        re_ranking(bad, q_q, g_g)
