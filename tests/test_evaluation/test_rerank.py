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
from mmdmpt.evaluation.functional.rerank import half_k1


def _blocks(q_feats, g_feats, metric='euclidean'):
    return (
        compute_distance(q_feats, g_feats, metric).numpy(),
        compute_distance(q_feats, q_feats, metric).numpy(),
        compute_distance(g_feats, g_feats, metric).numpy(),
    )


def _dense_reference(dist_all, num_query, k1, k2, lambda_value):
    """Slow, dense, set-based transcription of the paper's steps.

    Details as the authors' released code: ``k1 / 2`` rounded half to even
    (``int(np.around(k1 / 2.))``) and a strict ``> 2/3`` expansion test.
    """
    d = np.clip(dist_all.astype(np.float64), 0, None)
    d = d / d.max(axis=1, keepdims=True)
    total = d.shape[0]
    ranking = np.argsort(d, axis=1, kind='stable')
    k_half = int(np.around(k1 / 2.0))

    def neighbours(p, k):
        return set(ranking[p, : k + 1].tolist())

    def reciprocal(p, k):
        return {g for g in neighbours(p, k) if p in neighbours(g, k)}

    enc = np.zeros((total, total))
    for p in range(total):
        base = reciprocal(p, k1)
        expanded = base | {p}
        for q in base:
            half = reciprocal(q, k_half)
            if len(base & half) > 2.0 / 3.0 * len(half):
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


def _line_blocks(pos, num_query):
    """``(q_g, q_q, g_g)`` of the distances ``|x_i - x_j|`` of points on a line."""
    d = np.abs(np.subtract.outer(pos, pos))
    return d[:num_query, num_query:], d[:num_query, :num_query], d[num_query:, num_query:]


def _from_sets(pos, r_star, num_query, lambda_value):
    """Eqs. (7)-(11) of the paper with k2 = 1, from R*(p, k1) sets worked out by hand.

    ``d`` is ``|x_p - x_g|`` divided by the row maximum ``m_p``;
    ``V_p[g] = exp(-d(p, g))`` on ``R*(p, k1)``, scaled to sum 1; the
    Jaccard distance is ``1 - sum(min(V_p, V_g)) / sum(max(V_p, V_g))``;
    the result is ``(1 - lambda) * d_J + lambda * d``.
    """
    d = np.abs(np.subtract.outer(pos, pos))
    d = d / d.max(axis=1, keepdims=True)
    total = len(pos)
    enc = np.zeros((total, total))
    for p, members in r_star.items():
        cols = sorted(members)
        enc[p, cols] = np.exp(-d[p, cols])
        enc[p] /= enc[p].sum()
    out = np.zeros((num_query, total - num_query))
    for i in range(num_query):
        for j in range(num_query, total):
            a, b = enc[i], enc[j]
            jac = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[i, j - num_query] = (1 - lambda_value) * jac + lambda_value * d[i, j]
    return out


# Case 1: six points on a line, k1 = 3 (k1 / 2 -> 2), k2 = 1; samples 0, 1 are
# the queries. Positions and distance rows |x_p - x_g| (row maximum m_p):
#   x = 0, 3, 4, 11, 12, 23
#   p0: (0, 3, 4, 11, 12, 23) m=23   ranking 0 1 2 3 4 5
#   p1: (3, 0, 1, 8, 9, 20)   m=20   ranking 1 2 0 3 4 5
#   p2: (4, 1, 0, 7, 8, 19)   m=19   ranking 2 1 0 3 4 5
#   p3: (11, 8, 7, 0, 1, 12)  m=12   ranking 3 4 2 1 0 5
#   p4: (12, 9, 8, 1, 0, 11)  m=12   ranking 4 3 2 1 5 0
#   p5: (23, 20, 19, 12, 11, 0) m=23 ranking 5 4 3 2 1 0
# N(p, 3) = first 4 of the ranking:
#   N0={0,1,2,3} N1={0,1,2,3} N2={0,1,2,3} N3={1,2,3,4} N4={1,2,3,4} N5={2,3,4,5}
# R(p, 3) = {g in N(p, 3) : p in N(g, 3)}:
#   R0={0,1,2} (0 not in N3)   R1={0,1,2,3}   R2={0,1,2,3}   R3={1,2,3,4}
#   R4={3,4} (4 not in N1, N2)   R5={5} (5 in no other N(g, 3))
# N(p, 2) = first 3: N0={0,1,2} N1={0,1,2} N2={0,1,2} N3={2,3,4} N4={2,3,4}
#   N5={3,4,5}; R(p, 2): R0=R1=R2={0,1,2}, R3=R4={3,4}, R5={5}.
# Expansion, for q in R(p, 3), test |R(p,3) & R(q,2)| > 2/3 |R(q,2)|:
#   p0, p4, p5: every R(q, 2) is inside R(p, 3): nothing added.
#   p1, p2: q = 3: |{0,1,2,3} & {3,4}| = 1, not > 4/3: 4 is not added.
#   p3: q = 1 or 2: |{1,2,3,4} & {0,1,2}| = 2 = 2/3 * 3 exactly: with the strict
#       test 0 is NOT added (with >= it would be: R*3 = {0,1,2,3,4}).
# R*: R*0={0,1,2} R*1={0,1,2,3} R*2={0,1,2,3} R*3={1,2,3,4} R*4={3,4} R*5={5}.
# V (exp(-d / m_p) on R*, scaled to sum 1), to 6 digits:
#   V0 = {0: .367906, 1: .322916, 2: .309177}
#   V1 = {0: .247170, 1: .287170, 2: .273165, 3: .192496}
#   V2 = {0: .234780, 1: .274937, 2: .289795, 3: .200488}
#   V3 = {1: .171626, 2: .186540, 3: .334281, 4: .307553}
#   V4 = {3: .479179, 4: .520821}      V5 = {5: 1}
# Jaccard d_J = 1 - S / (2 - S), S = sum of minima over the common support:
#   (0,2): S = .234780 + .274937 + .289795 = .799512 -> d_J = .334011
#   (0,3): S = .171626 + .186540 = .358166 -> d_J = .781850
#   (0,4), (0,5), (1,5): disjoint supports -> d_J = 1
#   (1,2): S = .234780 + .274937 + .273165 + .192496 = .975378 -> d_J = .048062
#   (1,3): S = .171626 + .186540 + .192496 = .550662 -> d_J = .620060
#   (1,4): S = .192496 -> d_J = .893502
# Final (lambda = 0.3) = 0.7 d_J + 0.3 d(q, g) / m_q.
LINE_6 = np.array([0.0, 3.0, 4.0, 11.0, 12.0, 23.0])
R_STAR_6 = {0: {0, 1, 2}, 1: {0, 1, 2, 3}, 2: {0, 1, 2, 3}, 3: {1, 2, 3, 4}, 4: {3, 4}, 5: {5}}
JACCARD_6 = np.array([[0.334011, 0.781850, 1.0, 1.0], [0.048062, 0.620060, 0.893502, 1.0]])

# Case 2: eight points, k1 = 5: k1 / 2 = 2.5 rounds half to even to 2 (the old
# (k1 + 1) // 2 gave 3). Samples 0, 1, 2 are the queries.
#   x = 0, 1, 3, 10, 11, 14, 16, 23
#   rankings: p0 0 1 2 3 4 5 6 7 | p1 1 0 2 3 4 5 6 7 | p2 2 1 0 3 4 5 6 7
#             p3 3 4 5 6 2 1 0 7 | p4 4 3 5 6 2 1 0 7 | p5 5 6 4 3 7 2 1 0
#             p6 6 5 4 3 7 2 1 0 | p7 7 6 5 4 3 2 1 0
#   row maxima m = 23, 22, 20, 13, 12, 14, 16, 23
# N(p, 5) = first 6: N0=N1=N2={0..5}, N3=N4={1..6}, N5=N6={2..7}, N7={2..7}
# R(p, 5): R0={0,1,2}  R1={0,1,2,3,4}  R2={0,...,5}  R3=R4={1,...,6}
#          R5={2,...,7}  R6={3,...,7} (6 not in N2)  R7={5,6,7}
# N(p, 2) = first 3 -> R(p, 2): R0=R1=R2={0,1,2}, R3={3,4} (3 not in N5),
#          R4={3,4,5}, R5={4,5,6}, R6={5,6} (6 not in N4), R7={7}
# Expansion with R(q, 2), test > 2/3 |R(q, 2)|:
#   p1, q=4: |{0..4} & {3,4,5}| = 2, not > 2: 5 not added.
#   p2, q=5: |{0..5} & {4,5,6}| = 2, not > 2: 6 not added.
#   p3, p4, q=1,2: |{1..6} & {0,1,2}| = 2: 0 not added.
#   p5, q=2: |{2..7} & {0,1,2}| = 1: nothing; p7, q=5: |{5,6,7} & {4,5,6}| = 2:
#   4 not added. Every other R(q, 2) lies inside R(p, 5).
#   R* = R(p, 5) for every p.
# With the old rounding (R(q, 3): R0..R2={0,1,2}, R3..R6={3,4,5,6}, R7={7}),
#   p2, q=3..5: |{0..5} & {3,4,5,6}| = 3 > 8/3 would add 6: R*2 = {0,...,6}.
# V, to 6 digits:
#   V0 = {0: .352713, 1: .337706, 2: .309581}
#   V1 = {0: .229281, 1: .239943, 2: .219092, 3: .159383, 4: .152301}
#   V2 = {0: .182450, 1: .191804, 2: .211977, 3: .149377, 4: .142092, 5: .122300}
#   V3 = {1: .114369, 2: .133390, 3: .228546, 4: .211625, 5: .168014, 6: .144056}
#   V4 = {1: .100926, 2: .119230, 3: .213661, 4: .232229, 5: .180860, 6: .153095}
#   V5 = {2: .103424, 3: .170517, 4: .183142, 5: .226909, 6: .196702, 7: .119306}
#   V6 = {3: .174127, 4: .185358, 5: .223584, 6: .253354, 7: .163577}
#   V7 = {5: .280131, 6: .305581, 7: .414288}
# e.g. (2,6): S = .149377 + .142092 + .122300 = .413769 -> d_J = .739149;
#      (0,3): S = .114369 + .133390 = .247759 -> d_J = .858604;
#      (1,7), (0,6), (0,7): disjoint -> 1.
LINE_8 = np.array([0.0, 1.0, 3.0, 10.0, 11.0, 14.0, 16.0, 23.0])
R_STAR_8 = {
    0: {0, 1, 2},
    1: {0, 1, 2, 3, 4},
    2: {0, 1, 2, 3, 4, 5},
    3: {1, 2, 3, 4, 5, 6},
    4: {1, 2, 3, 4, 5, 6},
    5: {2, 3, 4, 5, 6, 7},
    6: {3, 4, 5, 6, 7},
    7: {5, 6, 7},
}


def test_hand_worked_case_strict_two_thirds():
    blocks = _line_blocks(LINE_6, 2)
    jaccard = re_ranking(*blocks, k1=3, k2=1, lambda_value=0.0)
    np.testing.assert_allclose(jaccard, JACCARD_6, atol=1e-6)
    np.testing.assert_allclose(jaccard, _from_sets(LINE_6, R_STAR_6, 2, 0.0), atol=1e-6)
    out = re_ranking(*blocks, k1=3, k2=1, lambda_value=0.3)
    scaled = blocks[0] / np.abs(np.subtract.outer(LINE_6, LINE_6)).max(1)[:2, None]
    np.testing.assert_allclose(out, 0.7 * JACCARD_6 + 0.3 * scaled, atol=1e-6)
    np.testing.assert_allclose(out, _from_sets(LINE_6, R_STAR_6, 2, 0.3), atol=1e-6)
    # With ">=" 0 would join R*(3): column of sample 3 (gallery 1) would change.
    loose = _from_sets(LINE_6, {**R_STAR_6, 3: {0, 1, 2, 3, 4}}, 2, 0.3)
    assert np.abs(loose[:, 1] - out[:, 1]).min() > 0.01


def test_hand_worked_case_half_even_rounding():
    blocks = _line_blocks(LINE_8, 3)
    out = re_ranking(*blocks, k1=5, k2=1, lambda_value=0.3)
    expected = _from_sets(LINE_8, R_STAR_8, 3, 0.3)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    jaccard = re_ranking(*blocks, k1=5, k2=1, lambda_value=0.0)
    assert jaccard[2, 3] == pytest.approx(0.739149, abs=1e-6)  # (2, 6)
    assert jaccard[0, 0] == pytest.approx(0.858604, abs=1e-6)  # (0, 3)
    assert jaccard[1, 4] == jaccard[0, 3] == jaccard[0, 4] == 1.0  # disjoint supports
    # k1 / 2 rounded up to 3 would put 6 into R*(2): query 2's row would change.
    rounded_up = _from_sets(LINE_8, {**R_STAR_8, 2: {0, 1, 2, 3, 4, 5, 6}}, 3, 0.3)
    assert np.abs(rounded_up[2] - out[2]).max() > 0.01


def test_hand_worked_case_k1_one():
    # k1 = 1: k1 / 2 rounds to 0 and R(q, 0) = {q}; R*(p, 1) = R(p, 1) = p and
    # its nearest sample when they are each other's nearest: on LINE_6 the
    # nearest samples are 0->1, 1->2, 2->1, 3->4, 4->3, 5->4, so
    # R* = {0}, {1,2}, {1,2}, {3,4}, {3,4}, {5}.
    r_star = {0: {0}, 1: {1, 2}, 2: {1, 2}, 3: {3, 4}, 4: {3, 4}, 5: {5}}
    out = re_ranking(*_line_blocks(LINE_6, 2), k1=1, k2=1, lambda_value=0.3)
    np.testing.assert_allclose(out, _from_sets(LINE_6, r_star, 2, 0.3), atol=1e-6)


def test_half_k1_rounds_half_to_even():
    assert [half_k1(k) for k in (1, 2, 3, 4, 5, 6, 7, 9, 20)] == [0, 1, 2, 2, 2, 3, 4, 4, 10]


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


@pytest.mark.parametrize(
    'k1,k2,lambda_value', [(3, 1, 0.3), (5, 3, 0.3), (9, 2, 0.5), (20, 6, 0.3), (4, 9, 0)]
)
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
    # 'euclidean' is the paper's squared Euclidean distance
    squared = [b**2 for b in _blocks(q_feats, g_feats)]
    np.testing.assert_allclose(out, re_ranking(*squared, k1=6, k2=3), atol=1e-6)
    plain = re_ranking(*_blocks(q_feats, g_feats), k1=6, k2=3)
    assert np.abs(plain - out).max() > 1e-2
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
    euclidean = re_ranking_from_features(q_n, g_n, k1=5, k2=2, metric='euclidean')
    np.testing.assert_allclose(euclidean, out, atol=1e-5)
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
