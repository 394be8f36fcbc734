"""CMC, mAP and mINP of a ReID ranking.

The protocol (``shared/datasets.md``, "Evaluation protocol"), per query:

1. sort the gallery by distance, stably: ties keep gallery order;
2. remove the gallery samples with the query's identity and the query's
   camera -- or, when scene ids are given (MSVR310), the query's identity and
   the query's scene, whatever the camera;
3. on the kept ranking, with the true matches at 1-based positions
   ``p_1 < p_2 < ... < p_n``:

   - ``CMC@k = 1`` if ``p_1 <= k`` (so it stays 1 past the end of a short
     gallery);
   - ``AP = mean_i(i / p_i)`` (precision at each true match);
   - ``INP = n / p_n``;

   a query with no true match left (``n = 0``) is skipped and counted.

mAP, mINP and CMC are means over the valid queries, returned as fractions.

Three entry points share these rules:

- :func:`evaluate_rank`: the reference, a plain per-query NumPy loop over a
  given distance matrix, written to be audited;
- :func:`evaluate_distmat`: the same on a given matrix, vectorised with
  PyTorch over chunks of queries;
- :func:`evaluate_features`: computes the distances chunk by chunk from
  features and never holds the full distance or rank matrix.
"""

from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from ._utils import (
    ArrayLike,
    check_features,
    check_id_arrays,
    check_max_rank,
    check_metric,
    to_numpy,
    to_tensor,
)
from .distance import check_chunk_size, pairwise_distance, prepare_features

__all__ = ['evaluate_rank', 'evaluate_distmat', 'evaluate_features']


def _check_distmat_shape(shape: tuple, num_query: int, num_gallery: int) -> None:
    if len(shape) != 2:
        raise ValueError(f'distmat must be 2-D (num_query, num_gallery), got shape {shape}.')
    if shape != (num_query, num_gallery):
        raise ValueError(
            f'distmat has shape {shape} but there are {num_query} query and '
            f'{num_gallery} gallery ids: expected ({num_query}, {num_gallery}).'
        )


def _no_valid_query_error(num_query: int, use_scenes: bool) -> ValueError:
    rule = 'same id and same scene' if use_scenes else 'same id and same camera'
    return ValueError(
        f'None of the {num_query} queries has a true match left in the gallery '
        f'after removing the samples with the {rule}; check the query/gallery split.'
    )


def _summary(
    ap_sum: float,
    inp_sum: float,
    cmc_counts: np.ndarray,
    num_valid: int,
    num_invalid: int,
    use_scenes: bool,
) -> Dict[str, Union[float, int, np.ndarray]]:
    if num_valid == 0:
        raise _no_valid_query_error(num_invalid, use_scenes)
    return dict(
        mAP=float(ap_sum / num_valid),
        mINP=float(inp_sum / num_valid),
        cmc=cmc_counts.astype(np.float64) / num_valid,
        num_valid_queries=int(num_valid),
        num_invalid_queries=int(num_invalid),
    )


def evaluate_rank(
    distmat: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: ArrayLike,
    gallery_camids: ArrayLike,
    max_rank: int = 50,
    query_sceneids: Optional[ArrayLike] = None,
    gallery_sceneids: Optional[ArrayLike] = None,
) -> Dict[str, Union[float, int, np.ndarray]]:
    """Reference CMC/mAP/mINP of a distance matrix, one query at a time.

    The distances are compared as float64. To reproduce the ties of
    :func:`evaluate_features` exactly, pass the matrix made by
    :func:`~mmdmpt.evaluation.functional.compute_distance`.

    Args:
        distmat (ArrayLike): ``(Q, G)`` distances, smaller is closer; no NaN.
        query_pids (ArrayLike): ``(Q,)`` query identities.
        gallery_pids (ArrayLike): ``(G,)`` gallery identities.
        query_camids (ArrayLike): ``(Q,)`` query cameras.
        gallery_camids (ArrayLike): ``(G,)`` gallery cameras.
        max_rank (int): Length of the returned CMC curve, >= 1; a gallery
            shorter than this is fine. Defaults to 50.
        query_sceneids (ArrayLike, optional): ``(Q,)`` query scenes. Given
            together with ``gallery_sceneids``, the removal rule becomes
            same id and same scene (whatever the camera). Defaults to None.
        gallery_sceneids (ArrayLike, optional): ``(G,)`` gallery scenes.
            Defaults to None.

    Returns:
        dict: ``mAP`` and ``mINP`` (floats in [0, 1]), ``cmc`` (float64
        array of length ``max_rank``, fractions), ``num_valid_queries`` and
        ``num_invalid_queries`` (queries skipped for having no true match
        left).

    Raises:
        ValueError: On shape mismatches, NaN distances, only one of the two
            scene id arrays, ``max_rank < 1``, an empty query or gallery set,
            or when no query has a true match left.
    """
    max_rank = check_max_rank(max_rank)
    dist = to_numpy(distmat, 'distmat')
    q_ids = to_numpy(query_pids, 'query_pids')
    g_ids = to_numpy(gallery_pids, 'gallery_pids')
    num_q = q_ids.shape[0] if q_ids.ndim else 0
    num_g = g_ids.shape[0] if g_ids.ndim else 0
    q_pids, g_pids, q_groups, g_groups, use_scenes = check_id_arrays(
        num_q,
        num_g,
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        query_sceneids,
        gallery_sceneids,
    )
    _check_distmat_shape(tuple(dist.shape), num_q, num_g)
    dist = dist.astype(np.float64, copy=False)
    if np.isnan(dist).any():
        raise ValueError('distmat contains NaN distances.')

    ap_sum = inp_sum = 0.0
    cmc_counts = np.zeros(max_rank, dtype=np.int64)
    num_valid = num_invalid = 0
    for i in range(num_q):
        order = np.argsort(dist[i], kind='stable')
        matches = g_pids[order] == q_pids[i]
        removed = matches & (g_groups[order] == q_groups[i])
        hits = matches[~removed]  # true-match flags along the kept ranking
        positions = np.flatnonzero(hits) + 1  # 1-based positions p_1 < ... < p_n
        if positions.size == 0:
            num_invalid += 1
            continue
        num_valid += 1
        if positions[0] <= max_rank:
            cmc_counts[positions[0] - 1 :] += 1
        ap_sum += float(np.mean(np.arange(1, positions.size + 1) / positions))
        inp_sum += positions.size / positions[-1]
    return _summary(ap_sum, inp_sum, cmc_counts, num_valid, num_invalid, use_scenes)


def _lexsort(*keys: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by ``keys[0]``, then ``keys[1]``, ... (stable)."""
    perm = torch.arange(keys[0].shape[0], device=keys[0].device)
    for key in reversed(keys):
        perm = perm[torch.sort(key[perm], stable=True).indices]
    return perm


def _positions_by_count(
    dist: torch.Tensor, match: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of the true matches in each row's stable ascending order.

    Found without sorting the gallery (the tests compare it with a full
    stable sort per row): the stable position of a match at distance ``t``
    and gallery index ``j`` is the number of samples closer than ``t`` plus
    the number at exactly ``t`` with an index below ``j``.

    1. The matches of each row, ordered by (distance, index), give the sorted
       thresholds ``t_0 <= t_1 <= ...`` of the row (padded with +inf).
    2. For every sample, ``s = #{k : t_k <= d}`` (``searchsorted``); a sample
       is closer than ``t_k`` iff ``s <= k``, so a histogram of ``s`` and its
       cumulative sum count the closer samples of every match.
    3. Samples equal to a threshold (``d == t_{s-1}``, few unless distances
       tie massively) precede the matches of that run of equal thresholds
       whose gallery index is larger: a suffix of the run, added with a
       difference array.

    Args:
        dist (torch.Tensor): ``(C, G)`` finite float64 distances.
        match (torch.Tensor): ``(C, G)`` bool, True where the ids agree.

    Returns:
        tuple: ``(rows, cols, pos)``, int64 of equal length: each true match
        (query row, gallery column) with its 0-based position in the row's
        stable ascending order, sorted by (row, position).
    """
    num_rows, num_cols = dist.shape
    device = dist.device
    rows, cols = match.nonzero(as_tuple=True)
    values = dist[rows, cols]
    perm = _lexsort(rows, values, cols)
    rows, cols, values = rows[perm], cols[perm], values[perm]
    num = rows.shape[0]
    if num == 0:
        return rows, cols, cols.clone()
    counts = torch.bincount(rows, minlength=num_rows)
    row_start = counts.cumsum(0) - counts
    slot = torch.arange(num, device=device) - row_start[rows]
    width = int(counts.max())
    thresholds = torch.full((num_rows, width), float('inf'), dtype=dist.dtype, device=device)
    thresholds[rows, slot] = values

    # 2. Samples strictly closer than each threshold.
    below = torch.searchsorted(thresholds, dist, right=True)  # (C, G): #{k : t_k <= d}
    prev = (below - 1).clamp_min_(0)
    equal = torch.gather(thresholds, 1, prev) == dist
    del prev
    equal &= below > 0
    eq_rows, eq_cols = equal.nonzero(as_tuple=True)
    del equal
    eq_end = row_start[eq_rows] + below[eq_rows, eq_cols]  # entry just past the equal run
    below += (torch.arange(num_rows, device=device) * (width + 1))[:, None]
    closer = torch.bincount(below.view(-1), minlength=num_rows * (width + 1))
    del below
    closer = closer.view(num_rows, width + 1).cumsum(1)
    pos = closer[rows, slot]

    # 3. Equal distance, smaller gallery index.
    new_run = torch.ones(num, dtype=torch.bool, device=device)
    new_run[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
    run_id = new_run.cumsum(0) - 1
    key = run_id * (num_cols + 1) + cols  # increasing along the entries
    eq_run = run_id[eq_end - 1]
    eq_begin = torch.searchsorted(key, eq_run * (num_cols + 1) + eq_cols, right=True)
    diff = torch.zeros(num + 1, dtype=torch.int64, device=device)
    ones = torch.ones_like(eq_begin)
    diff.index_add_(0, eq_begin, ones).index_add_(0, eq_end, -ones)
    pos += diff.cumsum(0)[:num]
    return rows, cols, pos


class _RankAccumulator:
    """Vectorised evaluation of chunks of queries, summed over chunks.

    Args:
        gallery_pids (torch.Tensor): ``(G,)`` int64 gallery identities.
        gallery_groups (torch.Tensor): ``(G,)`` int64 cameras or scenes.
        max_rank (int): CMC length.
    """

    def __init__(
        self, gallery_pids: torch.Tensor, gallery_groups: torch.Tensor, max_rank: int
    ) -> None:
        self.g_pids = gallery_pids
        self.g_groups = gallery_groups
        self.max_rank = max_rank
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.cmc_counts = torch.zeros(max_rank, dtype=torch.int64)
        self.num_valid = 0
        self.num_invalid = 0

    def add(self, dist: torch.Tensor, q_pids: torch.Tensor, q_groups: torch.Tensor) -> None:
        """Evaluate the queries of one chunk.

        Only the true-match entries are handled individually: their positions
        in the stable ranking (see :func:`_positions_by_count`), then
        segmented cumulative sums over each row give the number of removed
        samples before each match (hence its position in the kept ranking)
        and the match's rank among the row's kept matches.

        Args:
            dist (torch.Tensor): ``(C, G)`` float64 distances (not modified).
            q_pids (torch.Tensor): ``(C,)`` int64 query identities.
            q_groups (torch.Tensor): ``(C,)`` int64 query cameras or scenes.
        """
        if not bool(torch.isfinite(dist).all()):
            if bool(torch.isnan(dist).any()):
                raise ValueError(
                    'The distances contain NaN (a NaN in distmat, or NaN/infinite features).'
                )
            big = torch.finfo(dist.dtype).max  # +-inf rank last/first, ties in gallery order
            dist = torch.nan_to_num(dist, posinf=big, neginf=-big)
        num_rows, num_cols = dist.shape
        device = dist.device
        rows, gallery_idx, pos = _positions_by_count(dist, q_pids[:, None] == self.g_pids[None, :])
        removed = self.g_groups[gallery_idx] == q_groups[rows]

        counts = torch.bincount(rows, minlength=num_rows)
        seg_start = (counts.cumsum(0) - counts)[rows]  # first entry of each entry's row

        def seg_cumsum(values: torch.Tensor) -> torch.Tensor:
            """Inclusive cumulative sum restarting at each row."""
            total = values.cumsum(0)
            return total - (total - values)[seg_start]

        removed_i = removed.to(torch.int64)
        kept_pos = pos + 1 - (seg_cumsum(removed_i) - removed_i)  # 1-based, kept ranking
        good = ~removed
        good_rows = rows[good]
        good_pos = kept_pos[good]
        good_rank = seg_cumsum(good.to(torch.int64))[good]  # i of the i-th kept match

        num_good = torch.bincount(good_rows, minlength=num_rows)
        valid = num_good > 0
        ap = torch.zeros(num_rows, dtype=torch.float64, device=device)
        ap.index_add_(0, good_rows, good_rank.to(torch.float64) / good_pos.to(torch.float64))
        last = torch.zeros(num_rows, dtype=torch.int64, device=device)
        last.scatter_reduce_(0, good_rows, good_pos, reduce='amax', include_self=True)
        first = torch.full((num_rows,), num_cols + 1, dtype=torch.int64, device=device)
        first.scatter_reduce_(0, good_rows, good_pos, reduce='amin', include_self=True)

        denom = num_good.clamp_min(1).to(torch.float64)
        self.ap_sum += float((ap / denom)[valid].sum())
        inp = num_good.to(torch.float64) / last.clamp_min(1).to(torch.float64)
        self.inp_sum += float(inp[valid].sum())
        hit_pos = first[valid & (first <= self.max_rank)] - 1
        self.cmc_counts += torch.bincount(hit_pos, minlength=self.max_rank).cpu()
        num_valid = int(valid.sum())
        self.num_valid += num_valid
        self.num_invalid += num_rows - num_valid

    def summary(self, use_scenes: bool) -> Dict[str, Union[float, int, np.ndarray]]:
        """The metrics over all chunks added so far (see :func:`evaluate_rank`)."""
        return _summary(
            self.ap_sum,
            self.inp_sum,
            self.cmc_counts.cumsum(0).numpy(),
            self.num_valid,
            self.num_invalid,
            use_scenes,
        )


def _resolve_device(
    device: Optional[Union[str, torch.device]], reference: ArrayLike
) -> Optional[torch.device]:
    if device is not None:
        return torch.device(device)
    if isinstance(reference, torch.Tensor):
        return reference.device
    return torch.device('cpu')


def evaluate_distmat(
    distmat: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: ArrayLike,
    gallery_camids: ArrayLike,
    max_rank: int = 50,
    query_sceneids: Optional[ArrayLike] = None,
    gallery_sceneids: Optional[ArrayLike] = None,
    chunk_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict[str, Union[float, int, np.ndarray]]:
    """Vectorised :func:`evaluate_rank` for a given distance matrix.

    Same arguments, rules and result as :func:`evaluate_rank` (use it e.g.
    on a re-ranked matrix); the queries are processed in chunks with PyTorch.

    Args:
        distmat (ArrayLike): ``(Q, G)`` distances, compared as float64.
        query_pids (ArrayLike): ``(Q,)`` query identities.
        gallery_pids (ArrayLike): ``(G,)`` gallery identities.
        query_camids (ArrayLike): ``(Q,)`` query cameras.
        gallery_camids (ArrayLike): ``(G,)`` gallery cameras.
        max_rank (int): CMC length, >= 1. Defaults to 50.
        query_sceneids (ArrayLike, optional): Query scenes (scene rule).
            Defaults to None.
        gallery_sceneids (ArrayLike, optional): Gallery scenes. Defaults to
            None.
        chunk_size (int, optional): Queries per chunk. Defaults to None,
            which keeps a chunk near 256 MiB of working memory.
        device (str | torch.device, optional): Where to compute. Defaults to
            None: the matrix's device (CPU for NumPy input).

    Returns:
        dict: As :func:`evaluate_rank`.
    """
    max_rank = check_max_rank(max_rank)
    dev = _resolve_device(device, distmat)
    dist = to_tensor(distmat, 'distmat', dev)
    q_ids = to_numpy(query_pids, 'query_pids')
    g_ids = to_numpy(gallery_pids, 'gallery_pids')
    num_q = q_ids.shape[0] if q_ids.ndim else 0
    num_g = g_ids.shape[0] if g_ids.ndim else 0
    q_pids, g_pids, q_groups, g_groups, use_scenes = check_id_arrays(
        num_q,
        num_g,
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        query_sceneids,
        gallery_sceneids,
    )
    _check_distmat_shape(tuple(dist.shape), num_q, num_g)
    chunk_size = check_chunk_size(chunk_size, num_g)
    acc = _RankAccumulator(
        torch.from_numpy(g_pids).to(dev), torch.from_numpy(g_groups).to(dev), max_rank
    )
    q_pids_t = torch.from_numpy(q_pids).to(dev)
    q_groups_t = torch.from_numpy(q_groups).to(dev)
    for start in range(0, num_q, chunk_size):
        stop = start + chunk_size
        chunk = dist[start:stop].to(torch.float64)
        acc.add(chunk, q_pids_t[start:stop], q_groups_t[start:stop])
    return acc.summary(use_scenes)


def evaluate_features(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: ArrayLike,
    gallery_camids: ArrayLike,
    max_rank: int = 50,
    query_sceneids: Optional[ArrayLike] = None,
    gallery_sceneids: Optional[ArrayLike] = None,
    metric: str = 'cosine',
    chunk_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict[str, Union[float, int, np.ndarray]]:
    """CMC/mAP/mINP straight from features, in bounded memory.

    Queries are processed ``chunk_size`` at a time: the chunk's float64
    distances (the same computation as
    :func:`~mmdmpt.evaluation.functional.compute_distance`), then the
    stable-sort position of every true match found by counting, without
    sorting the gallery, and vectorised bookkeeping on those entries only. Peak extra
    memory is about ``40 * chunk_size * G`` bytes plus the float64 copy of
    the gallery features; the full ``(Q, G)`` distance or rank matrix is
    never built. Results equal :func:`evaluate_rank` on
    ``compute_distance(query_feats, gallery_feats, metric)`` (up to float
    rounding of the means, and of distances that differ in the last bit
    between a chunk and the full matrix product).

    Args:
        query_feats (ArrayLike): ``(Q, D)`` query features (NumPy or tensor).
        gallery_feats (ArrayLike): ``(G, D)`` gallery features.
        query_pids (ArrayLike): ``(Q,)`` query identities.
        gallery_pids (ArrayLike): ``(G,)`` gallery identities.
        query_camids (ArrayLike): ``(Q,)`` query cameras.
        gallery_camids (ArrayLike): ``(G,)`` gallery cameras.
        max_rank (int): CMC length, >= 1. Defaults to 50.
        query_sceneids (ArrayLike, optional): Query scenes; with
            ``gallery_sceneids`` selects the same-id-same-scene rule.
            Defaults to None.
        gallery_sceneids (ArrayLike, optional): Gallery scenes. Defaults to
            None.
        metric (str): ``'cosine'`` (``1 - cos``, features normalised inside)
            or ``'euclidean'`` (plain, not squared, on the features as
            given). Defaults to ``'cosine'``.
        chunk_size (int, optional): Queries per chunk. Defaults to None,
            which keeps a chunk near 256 MiB of working memory (134 queries
            at a gallery of 50,000).
        device (str | torch.device, optional): Where to compute. Defaults to
            None: the query features' device (CPU for NumPy input).

    Returns:
        dict: As :func:`evaluate_rank`.
    """
    check_metric(metric)
    max_rank = check_max_rank(max_rank)
    dev = _resolve_device(device, query_feats)
    q_feats, g_feats = check_features(query_feats, gallery_feats, dev)
    num_q, num_g = q_feats.shape[0], g_feats.shape[0]
    q_pids, g_pids, q_groups, g_groups, use_scenes = check_id_arrays(
        num_q,
        num_g,
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        query_sceneids,
        gallery_sceneids,
    )
    chunk_size = check_chunk_size(chunk_size, num_g)
    g_ops = prepare_features(g_feats, metric, deduplicate=True)
    acc = _RankAccumulator(
        torch.from_numpy(g_pids).to(dev), torch.from_numpy(g_groups).to(dev), max_rank
    )
    q_pids_t = torch.from_numpy(q_pids).to(dev)
    q_groups_t = torch.from_numpy(q_groups).to(dev)
    for start in range(0, num_q, chunk_size):
        stop = start + chunk_size
        dist = pairwise_distance(prepare_features(q_feats[start:stop], metric), g_ops, metric)
        acc.add(dist, q_pids_t[start:stop], q_groups_t[start:stop])
        del dist
    return acc.summary(use_scenes)
