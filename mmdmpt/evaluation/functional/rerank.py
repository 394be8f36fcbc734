"""k-reciprocal re-ranking, written from the paper's description.

Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017. Where the paper leaves a detail open, the authors'
released code decides (noted below as "released code").

Over the union of the ``Q`` queries and ``G`` gallery samples (``N = Q + G``):

1. Original distance ``d``: the given distances, each row divided by its
   maximum so that ``d`` lies in ``[0, 1]`` (negative values clamped to 0).
   :func:`re_ranking` takes ``d`` as given; the paper's ``d`` is the
   squared Euclidean (Mahalanobis with ``M = I``) distance, so pass squared
   Euclidean distances to reproduce it (the released code squares the
   distances it is given). :func:`re_ranking_from_features` computes the
   squared Euclidean distance for ``metric='euclidean'``, and ``1 - cos``
   for ``'cosine'``, which on L2-normalised features is half of it (the same
   after the row scaling).
2. ``N(p, k)``: the ``k`` nearest samples of ``p`` besides itself, i.e. the
   first ``k + 1`` of its ranking, which start with ``p``.
3. k-reciprocal neighbours ``R(p, k) = {g in N(p, k) : p in N(g, k)}``
   (``p`` itself included).
4. Expansion: ``R*(p, k1)`` is ``R(p, k1)`` joined with ``R(q, k1 / 2)``
   for every ``q in R(p, k1)`` such that
   ``|R(p, k1) & R(q, k1 / 2)| > 2/3 |R(q, k1 / 2)|``, strictly greater as
   in the released code, and with ``k1 / 2`` rounded as the released code
   does, ``int(np.around(k1 / 2))``, i.e. half to even: ``k1 = 20 -> 10``,
   ``5 -> 2``, ``7 -> 4``, ``3 -> 2``, ``1 -> 0`` (``R(q, 0) = {q}``).
   ``p`` itself always belongs to ``R*``.
5. Sparse encoding ``V_p[g] = exp(-d(p, g))`` for ``g in R*(p, k1)``, else
   0; each ``V_p`` is scaled to sum to 1 (released code).
6. Local query expansion: ``V_p`` is replaced by the mean of ``V_g`` over the
   ``k2`` first samples of ``p``'s ranking (``p`` included); ``k2 = 1``
   leaves ``V`` unchanged.
7. Jaccard distance ``d_J(p, g) = 1 - sum(min(V_p, V_g)) / sum(max(V_p,
   V_g))``; since both vectors sum to 1, ``sum(max) = 2 - sum(min)``, so only
   the sums of minima are computed, through an inverted index (for each
   column, the gallery samples with a non-zero entry).
8. Final distance ``(1 - lambda) * d_J + lambda * d`` for each query-gallery
   pair.

Memory: the ``(N, N)`` matrix of all-pair distances is held once, in float32
(``4 N^2`` bytes) or float16 (``2 N^2`` bytes, ``dtype='float16'``), plus
about ``8 Q G`` bytes for the output and the Jaccard sums and a sparse
``V`` of about ``N * k2 * 1.5 * k1`` entries. Above ``max_samples`` samples
(default 30,000, i.e. 3.6 GB in float32) the functions refuse with a
``MemoryError`` instead of running out of memory. Ties at the ``k``-th
neighbour are resolved by :func:`torch.topk`.

Mixed precision: nothing here is affected by autocast (no float32 matrix
product; the features' distances are float64), so the result is the same
inside an autocast region.
"""

from typing import Optional, Tuple

import numpy as np
import torch

from mmdmpt.utils.errors import ConfigError

from ._utils import ArrayLike, check_features, check_metric, to_tensor
from .distance import check_chunk_size, pairwise_distance, prepare_features

__all__ = ['re_ranking', 're_ranking_from_features', 'DEFAULT_MAX_SAMPLES']

#: Largest ``Q + G`` accepted by default.
DEFAULT_MAX_SAMPLES = 30000
_DTYPES = {'float32': torch.float32, 'float16': torch.float16}
#: Rows handled at once by the dense steps (normalisation, top-k).
_ROW_CHUNK = 1024
#: (query entry, gallery entry) pairs handled at once by the Jaccard step.
_MAX_PAIRS = 1 << 22


def _check_params(k1: int, k2: int, lambda_value: float, dtype: str) -> torch.dtype:
    for name, value in (('k1', k1), ('k2', k2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f'{name} must be a positive int, got {value!r}.')
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ConfigError(f'lambda_value must be in [0, 1], got {lambda_value}.')
    if dtype not in _DTYPES:
        raise ConfigError(f'dtype must be one of {tuple(_DTYPES)}, got {dtype!r}.')
    return _DTYPES[dtype]


def _check_size(num_query: int, num_gallery: int, dtype: str, max_samples: Optional[int]) -> None:
    if num_query < 1 or num_gallery < 1:
        raise ValueError(
            f'Re-ranking needs queries and gallery samples, got {num_query} and {num_gallery}.'
        )
    total = num_query + num_gallery
    if max_samples is not None and total > max_samples:
        nbytes = total * total * _DTYPES[dtype].itemsize
        raise MemoryError(
            f'Re-ranking {num_query} queries against {num_gallery} gallery samples holds '
            f'the ({total}, {total}) matrix of all-pair distances, about '
            f'{nbytes / 1024**3:.1f} GiB in {dtype}, and {total} is above '
            f'max_samples={max_samples}. Raise max_samples (or pass None) if the '
            "memory is there, use dtype='float16' to halve it, or evaluate "
            'without re-ranking.'
        )


def re_ranking(
    q_g_dist: ArrayLike,
    q_q_dist: ArrayLike,
    g_g_dist: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    dtype: str = 'float32',
    max_samples: Optional[int] = DEFAULT_MAX_SAMPLES,
) -> np.ndarray:
    """k-reciprocal re-ranking of query-gallery distances.

    See the module docstring for the steps and the memory cost.

    Args:
        q_g_dist (ArrayLike): ``(Q, G)`` query-gallery distances, the
            paper's original distance ``d`` as it is used (any non-negative
            distance; squared Euclidean reproduces the paper, cosine on
            L2-normalised features gives the same result).
        q_q_dist (ArrayLike): ``(Q, Q)`` query-query distances.
        g_g_dist (ArrayLike): ``(G, G)`` gallery-gallery distances.
        k1 (int): Size of the k-reciprocal neighbourhood. Defaults to 20.
        k2 (int): Neighbours averaged in the local query expansion (1 turns
            it off). Defaults to 6.
        lambda_value (float): Weight of the original distance in the final
            one, in [0, 1]. Defaults to 0.3.
        dtype (str): Storage of the ``(Q+G, Q+G)`` matrix, ``'float32'`` or
            ``'float16'``. Defaults to ``'float32'``.
        max_samples (int, optional): Refuse when ``Q + G`` is larger.
            Defaults to :data:`DEFAULT_MAX_SAMPLES` (30,000); None disables
            the check.

    Returns:
        np.ndarray: ``(Q, G)`` float32 re-ranked distances in [0, 1].

    Raises:
        ConfigError: On bad parameters (a ``ValueError``).
        ValueError: On bad shapes or NaN distances.
        MemoryError: When ``Q + G > max_samples``.
    """
    storage = _check_params(k1, k2, lambda_value, dtype)
    q_g = to_tensor(q_g_dist, 'q_g_dist').cpu()
    q_q = to_tensor(q_q_dist, 'q_q_dist').cpu()
    g_g = to_tensor(g_g_dist, 'g_g_dist').cpu()
    if q_g.dim() != 2:
        raise ValueError(f'q_g_dist must be 2-D (Q, G), got shape {tuple(q_g.shape)}.')
    num_q, num_g = q_g.shape
    if tuple(q_q.shape) != (num_q, num_q):
        raise ValueError(f'q_q_dist has shape {tuple(q_q.shape)}, expected ({num_q}, {num_q}).')
    if tuple(g_g.shape) != (num_g, num_g):
        raise ValueError(f'g_g_dist has shape {tuple(g_g.shape)}, expected ({num_g}, {num_g}).')
    _check_size(num_q, num_g, dtype, max_samples)
    for name, t in (('q_g_dist', q_g), ('q_q_dist', q_q), ('g_g_dist', g_g)):
        if torch.isnan(t).any():
            raise ValueError(f'{name} contains NaN distances.')
    total = num_q + num_g
    dist = torch.empty((total, total), dtype=storage)
    dist[:num_q, :num_q] = q_q
    dist[:num_q, num_q:] = q_g
    dist[num_q:, :num_q] = q_g.T
    dist[num_q:, num_q:] = g_g
    return _k_reciprocal_rerank(dist, num_q, k1, k2, float(lambda_value))


def re_ranking_from_features(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = 'cosine',
    dtype: str = 'float32',
    max_samples: Optional[int] = DEFAULT_MAX_SAMPLES,
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """k-reciprocal re-ranking computed from features.

    The all-pair distances are computed row chunk by row chunk (float64, as
    :func:`~mmdmpt.evaluation.functional.compute_distance`, squared for
    ``'euclidean'``) straight into the ``(Q+G, Q+G)`` storage matrix. The
    paper's original distance is the squared Euclidean one; on
    L2-normalised features, cosine distance equals half of it, so after the
    per-row scaling both metrics give the same result.

    Args:
        query_feats (ArrayLike): ``(Q, D)`` query features.
        gallery_feats (ArrayLike): ``(G, D)`` gallery features.
        k1 (int): k-reciprocal neighbourhood size. Defaults to 20.
        k2 (int): Local query expansion size. Defaults to 6.
        lambda_value (float): Weight of the original distance. Defaults to
            0.3.
        metric (str): ``'cosine'`` (``1 - cos``) or ``'euclidean'``
            (squared Euclidean, the paper's distance). Defaults to
            ``'cosine'``.
        dtype (str): ``'float32'`` or ``'float16'`` storage. Defaults to
            ``'float32'``.
        max_samples (int, optional): Refuse when ``Q + G`` is larger (checked
            before any allocation). Defaults to 30,000; None disables it.
        chunk_size (int, optional): Rows of distances computed at once.
            Defaults to None (automatic, about 256 MiB).

    Returns:
        np.ndarray: ``(Q, G)`` float32 re-ranked distances.
    """
    check_metric(metric)
    storage = _check_params(k1, k2, lambda_value, dtype)
    q, g = check_features(query_feats, gallery_feats, torch.device('cpu'))
    num_q, num_g = q.shape[0], g.shape[0]
    _check_size(num_q, num_g, dtype, max_samples)
    feats = torch.cat([q, g]).to(torch.float64)
    total = feats.shape[0]
    ops = prepare_features(feats, metric, deduplicate=True)
    chunk_size = check_chunk_size(chunk_size, total)
    dist = torch.empty((total, total), dtype=storage)
    for start in range(0, total, chunk_size):
        block = pairwise_distance(
            prepare_features(feats[start : start + chunk_size], metric), ops, metric
        )
        if torch.isnan(block).any():
            raise ValueError('The distances contain NaN (NaN or infinite features).')
        if metric == 'euclidean':
            block.square_()  # the paper's squared Euclidean distance
        dist[start : start + chunk_size] = block
        del block
    return _k_reciprocal_rerank(dist, num_q, k1, k2, float(lambda_value))


def half_k1(k1: int) -> int:
    """``k1 / 2`` of the expansion step, rounded half to even.

    The released code's ``int(np.around(k1 / 2.))``: ``20 -> 10``, ``5 -> 2``,
    ``7 -> 4``, ``3 -> 2``, ``1 -> 0`` (``R(q, 0) = {q}``). Python's
    :func:`round` rounds half to even too, and ``k1 / 2`` is exact.

    Args:
        k1 (int): Size of the k-reciprocal neighbourhood.

    Returns:
        int: The neighbourhood size of the candidates' sets.
    """
    return int(round(k1 / 2))


def _nearest(dist: torch.Tensor, width: int) -> torch.Tensor:
    """First ``width`` entries of each row's ranking, ``(N, width)`` int64.

    Within the selected set the order is by (distance, index); which samples
    enter the set on a tie at the boundary is up to :func:`torch.topk`.
    """
    total = dist.shape[0]
    out = torch.empty((total, width), dtype=torch.int64)
    for start in range(0, total, _ROW_CHUNK):
        rows = dist[start : start + _ROW_CHUNK].float()
        values, index = torch.topk(rows, width, dim=1, largest=False, sorted=True)
        by_index = index.argsort(dim=1)
        index, values = index.gather(1, by_index), values.gather(1, by_index)
        out[start : start + _ROW_CHUNK] = index.gather(1, values.argsort(dim=1, stable=True))
    return out


def _reciprocal_mask(nearest: torch.Tensor, k: int) -> torch.Tensor:
    """``mask[p, t]`` is True iff ``g = nearest[p, t]`` (t <= k) has p in N(g, k)."""
    total = nearest.shape[0]
    width = min(k + 1, nearest.shape[1])
    table = nearest[:, :width]
    mask = torch.empty((total, width), dtype=torch.bool)
    for start in range(0, total, _ROW_CHUNK):
        cand = table[start : start + _ROW_CHUNK]  # (C, width)
        own = torch.arange(start, start + cand.shape[0])[:, None, None]
        mask[start : start + cand.shape[0]] = (table[cand] == own).any(dim=-1)
    return mask


def _segments(starts: torch.Tensor, counts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Enumerate the segments ``[starts[i], starts[i] + counts[i])``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``(owner, position)``: for every
        element of every segment, the segment's index ``i`` and the element.
    """
    owner = torch.arange(counts.shape[0]).repeat_interleave(counts)
    first = (counts.cumsum(0) - counts).repeat_interleave(counts)
    return owner, starts[owner] + torch.arange(owner.shape[0]) - first


def _k_reciprocal_rerank(
    dist: torch.Tensor, num_query: int, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    """Steps 1-8 of the module docstring on the ``(N, N)`` matrix ``dist``.

    ``dist`` is normalised in place; its first ``num_query`` rows/columns are
    the queries.
    """
    total = dist.shape[0]
    num_gallery = total - num_query

    # 1. Per-row scaling to [0, 1].
    for start in range(0, total, _ROW_CHUNK):
        rows = dist[start : start + _ROW_CHUNK].float().clamp_min_(0.0)
        rows /= rows.max(dim=1, keepdim=True).values.clamp_min_(1e-12)
        dist[start : start + _ROW_CHUNK] = rows

    # 2-3. Nearest samples and k-reciprocal neighbours (k1 and k1 / 2, rounded
    # half to even like the released code's int(np.around(k1 / 2.))).
    k_half = half_k1(k1)
    nearest = _nearest(dist, min(max(k1 + 1, k2), total))
    full = _reciprocal_mask(nearest, k1).numpy()
    half = _reciprocal_mask(nearest, k_half).numpy()
    nearest_np = nearest.numpy()
    width, width_half = full.shape[1], half.shape[1]
    half_sets = [frozenset(nearest_np[p, :width_half][half[p]].tolist()) for p in range(total)]

    # 4. Expansion R*(p, k1).
    row_parts, col_parts = [], []
    for p in range(total):
        base = set(nearest_np[p, :width][full[p]].tolist())
        expanded = set(base)
        expanded.add(p)
        for q in base:
            cand = half_sets[q]
            if 3 * len(base & cand) > 2 * len(cand):  # strictly more than 2/3
                expanded |= cand
        cols = np.fromiter(sorted(expanded), dtype=np.int64, count=len(expanded))
        col_parts.append(cols)
        row_parts.append(np.full(cols.shape[0], p, dtype=np.int64))
    rows_t = torch.from_numpy(np.concatenate(row_parts))
    cols_t = torch.from_numpy(np.concatenate(col_parts))

    # 5. Gaussian-kernel encoding, each row summing to 1 (sparse, row-major).
    weights = torch.exp(-dist[rows_t, cols_t].float())
    row_sums = torch.zeros(total).index_add_(0, rows_t, weights)
    weights /= row_sums[rows_t]

    # 6. Local query expansion: mean of the rows of the k2 first samples.
    if k2 > 1:
        row_count = torch.bincount(rows_t, minlength=total)
        row_start = row_count.cumsum(0) - row_count
        sources = nearest[:, :k2].reshape(-1)  # (N * k2,) rows to average
        owner, pos = _segments(row_start[sources], row_count[sources])
        keys = (owner // k2) * total + cols_t[pos]
        keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        weights = torch.zeros(keys.shape[0]).index_add_(0, inverse, weights[pos] / k2)
        rows_t, cols_t = keys // total, keys % total

    # 7. Sums of minima through an inverted index over the gallery rows.
    is_q = rows_t < num_query
    q_rows, q_cols, q_vals = rows_t[is_q], cols_t[is_q], weights[is_q]
    g_cols = cols_t[~is_q]
    by_col = torch.argsort(g_cols, stable=True)
    g_rows = (rows_t[~is_q] - num_query)[by_col]
    g_vals = weights[~is_q][by_col]
    g_count = torch.bincount(g_cols, minlength=total)
    g_start = g_count.cumsum(0) - g_count
    min_sums = torch.zeros(num_query * num_gallery, dtype=torch.float32)
    pairs = g_count[q_cols]  # gallery entries sharing each query entry's column
    pairs_cum = pairs.cumsum(0)
    start, num_entries = 0, q_rows.shape[0]
    while start < num_entries:
        done = int(pairs_cum[start - 1]) if start else 0
        stop = int(torch.searchsorted(pairs_cum, done + _MAX_PAIRS, right=True))
        stop = min(max(stop, start + 1), num_entries)
        entry, g_pos = _segments(g_start[q_cols[start:stop]], pairs[start:stop])
        entry += start
        mins = torch.minimum(q_vals[entry], g_vals[g_pos])
        min_sums.index_add_(0, q_rows[entry] * num_gallery + g_rows[g_pos], mins)
        start = stop
    min_sums = min_sums.view(num_query, num_gallery)
    jaccard = 1.0 - min_sums / (2.0 - min_sums)

    # 8. Blend with the original distance.
    final = jaccard.mul_(1.0 - lambda_value)
    final += dist[:num_query, num_query:].float() * lambda_value
    return final.clamp_(0.0, 1.0).numpy()
