"""CMC, mAP and mINP of a ReID ranking.

The protocol (``shared/datasets.md``, "Evaluation protocol"), per query:

1. sort the gallery by distance, stably: ties keep gallery order;
2. remove the gallery samples with the query's identity and the query's
   camera -- or, when scene ids are given (MSVR310), the query's identity and
   the query's scene, whatever the camera; ``removal_rule`` states the rule
   explicitly (``'camera'``, ``'scene'``, or ``'none'``: nothing removed,
   for data without cameras);
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

The vectorised two never sort a gallery: the position of every true match in
the stable ranking is counted (:func:`_positions_by_count`), in a few passes
over the chunk's distances.
"""

import contextlib
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from mmdmpt.structures.reid_features import removal_rule_name

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

#: Grid cells per distinct true-match distance of a row (see
#: :func:`_positions_by_count`): more cells leave fewer samples to compare
#: exactly, at the cost of a larger histogram.
CELLS_PER_THRESHOLD = 128
#: Samples placed exactly per step (bounds their temporary memory).
_EXACT_STEP = 1 << 14


def _check_distmat_shape(shape: tuple, num_query: int, num_gallery: int) -> None:
    if len(shape) != 2:
        raise ValueError(f'distmat must be 2-D (num_query, num_gallery), got shape {shape}.')
    if shape != (num_query, num_gallery):
        raise ValueError(
            f'distmat has shape {shape} but there are {num_query} query and '
            f'{num_gallery} gallery ids: expected ({num_query}, {num_gallery}).'
        )


def _no_valid_query_error(num_query: int, rule: str) -> ValueError:
    if rule == 'none':
        after = 'the gallery (no removal rule)'
    else:
        after = f'the gallery after removing the samples with the {removal_rule_name(rule)}'
    return ValueError(
        f'None of the {num_query} queries has a true match left in {after}; check the '
        'query/gallery split.'
    )


def _summary(
    ap_sum: float,
    inp_sum: float,
    cmc_counts: np.ndarray,
    num_valid: int,
    num_invalid: int,
    rule: str,
) -> Dict[str, Union[float, int, np.ndarray]]:
    if num_valid == 0:
        raise _no_valid_query_error(num_invalid, rule)
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
    removal_rule: Optional[str] = None,
) -> Dict[str, Union[float, int, np.ndarray]]:
    """Reference CMC/mAP/mINP of a distance matrix, one query at a time.

    The distances are compared as float64. To reproduce the ties of
    :func:`evaluate_features` exactly, pass the matrix made by
    :func:`~mmdmpt.evaluation.functional.compute_distance`.

    Args:
        distmat (ArrayLike): ``(Q, G)`` distances, smaller is closer; no NaN.
        query_pids (ArrayLike): ``(Q,)`` query identities.
        gallery_pids (ArrayLike): ``(G,)`` gallery identities.
        query_camids (ArrayLike, optional): ``(Q,)`` query cameras (None only
            when the rule does not use cameras).
        gallery_camids (ArrayLike, optional): ``(G,)`` gallery cameras.
        max_rank (int): Length of the returned CMC curve, >= 1; a gallery
            shorter than this is fine. Defaults to 50.
        query_sceneids (ArrayLike, optional): ``(Q,)`` query scenes. Given
            together with ``gallery_sceneids``, the removal rule becomes
            same id and same scene (whatever the camera). Defaults to None.
        gallery_sceneids (ArrayLike, optional): ``(G,)`` gallery scenes.
            Defaults to None.
        removal_rule (str, optional): ``'camera'``, ``'scene'`` or
            ``'none'`` (nothing removed: data without cameras). Defaults to
            None: ``'scene'`` when scene ids are given, else ``'camera'``.

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
    q_pids, g_pids, q_groups, g_groups, rule = check_id_arrays(
        num_q,
        num_g,
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        query_sceneids,
        gallery_sceneids,
        removal_rule,
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
        if q_groups is None:
            removed = np.zeros_like(matches)
        else:
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
    return _summary(ap_sum, inp_sum, cmc_counts, num_valid, num_invalid, rule)


def _lexsort(*keys: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by ``keys[0]``, then ``keys[1]``, ... (stable)."""
    perm = torch.arange(keys[0].shape[0], device=keys[0].device)
    for key in reversed(keys):
        perm = perm[torch.sort(key[perm], stable=True).indices]
    return perm


class _Workspace:
    """Buffers reused from chunk to chunk.

    Allocating (and first touching) a large tensor costs about as much as a
    pass over it; the per-chunk matrices of the evaluation are therefore
    taken from here, grown when a chunk needs more.
    """

    def __init__(self) -> None:
        self._buffers: Dict[Tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: Tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        """A tensor of ``shape`` (uninitialised), sharing memory with earlier calls of ``name``."""
        numel = 1
        for size in shape:
            numel *= int(size)
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.numel() < numel or buf.device != torch.device(device):
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[(name, dtype)] = buf
        return buf[:numel].view(shape)


def _exact_slots(bounds: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``#{b in bounds[row] : b <= value}`` for each (row, value), in bounded memory."""
    out = torch.empty(rows.shape[0], dtype=torch.int64, device=rows.device)
    for start in range(0, rows.shape[0], _EXACT_STEP):
        stop = start + _EXACT_STEP
        out[start:stop] = torch.searchsorted(
            bounds[rows[start:stop]], values[start:stop, None], right=True
        ).squeeze(1)
    return out


def _positions_by_count(
    mat: torch.Tensor,
    match: Optional[torch.Tensor] = None,
    rows: Optional[torch.Tensor] = None,
    cols: Optional[torch.Tensor] = None,
    from_similarity: bool = False,
    workspace: Optional[_Workspace] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of the true matches in each row's stable ascending order.

    Found without sorting the gallery (the tests compare it with a full
    stable sort per row): the stable position of a match at distance ``t``
    and gallery index ``j`` is the number of samples closer than ``t`` plus
    the number at exactly ``t`` with an index below ``j``.

    1. The matches of each row, ordered by (distance, index), give the row's
       distinct match distances ``u_0 < u_1 < ...`` (its *thresholds*).
    2. A per-row affine map of the distance, floored, puts every sample in
       one of ``CELLS_PER_THRESHOLD`` cells per threshold spread over
       ``[u_0, u_last]`` (plus catch-all cells outside). The map is monotone
       up to rounding, so a sample two cells or more below (above) a
       threshold's cell is surely closer (farther) than the threshold: a
       histogram of the cells counts them. The few samples within one cell of
       a threshold's cell are placed exactly, by binary search among the
       row's bounds ``[u_0, next(u_0), u_1, next(u_1), ...]`` (``next``: the
       following float), which also finds the samples *equal* to a threshold
       (an odd number of bounds at or below them).
    3. Samples equal to a threshold precede the matches of that threshold
       whose gallery index is larger: a suffix of the threshold's matches,
       added with a difference array.

    Every sample is touched by a handful of elementwise passes (the map, the
    histogram, the look-up of the near cells); only the matches and the near
    samples are handled one by one.

    Args:
        mat (torch.Tensor): ``(C, G)`` finite float64 distances, or with
            ``from_similarity`` cosine similarities whose distance is
            ``1 - s`` (computed here for the samples that need it, with the
            rounding of :func:`~.distance.pairwise_distance`).
        match (torch.Tensor, optional): ``(C, G)`` bool, True where the ids
            agree. Give either ``match`` or ``rows`` and ``cols``.
        rows (torch.Tensor, optional): Query row of each true match.
        cols (torch.Tensor, optional): Gallery column of each true match.
        from_similarity (bool): ``mat`` holds similarities. Defaults to
            False.
        workspace (_Workspace, optional): Buffers for the ``(C, G)``
            temporaries. Defaults to None (fresh ones).

    Returns:
        tuple: ``(rows, cols, pos)``, int64 of equal length: each true match
        (query row, gallery column) with its 0-based position in the row's
        stable ascending order, sorted by (row, position).
    """
    num_rows, num_cols = mat.shape
    device = mat.device
    if match is not None:
        rows, cols = match.nonzero(as_tuple=True)

    def distance(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        values = mat[r, c]
        return torch.sub(1.0, values) if from_similarity else values

    values = distance(rows, cols)
    perm = _lexsort(rows, values, cols)
    rows, cols, values = rows[perm], cols[perm], values[perm]
    num = rows.shape[0]
    if num == 0:
        return rows, cols, torch.zeros_like(rows)

    # 1. Thresholds: runs of equal distance among each row's matches.
    new_run = torch.ones(num, dtype=torch.bool, device=device)
    new_run[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
    run_id = new_run.cumsum(0) - 1
    run_rows, run_cols, run_values = rows[new_run], cols[new_run], values[new_run]
    num_runs = run_rows.shape[0]
    runs_per_row = torch.bincount(run_rows, minlength=num_rows)
    first_run = runs_per_row.cumsum(0) - runs_per_row
    run_slot = torch.arange(num_runs, device=device) - first_run[run_rows]
    max_runs = int(runs_per_row.max())

    # 2. Cells: x = d * scale + bias maps [u_0, u_last] of a row to
    # [2.5, num_cells + 0.5]; cells 0-1 and num_cells + 1 .. + 3 catch the rest.
    num_cells = max(4, min(CELLS_PER_THRESHOLD * max_runs, 4 * num_cols))
    bins = num_cells + 4
    wide = num_rows * bins >= 2**31
    has = runs_per_row > 0
    last_run = (first_run + runs_per_row - 1).clamp_min(0)
    lo = torch.where(has, run_values[first_run.clamp_max(num_runs - 1)], 0.0)
    hi = torch.where(has, run_values[last_run], 0.0)
    # a span no narrower than 1e-12 * num_cells of the values: the map stays monotone up
    # to a fraction of a cell, also for equal distances of unequal similarity
    magnitude = torch.maximum(torch.maximum(lo.abs(), hi.abs()), torch.ones_like(lo))
    floor = 1e-12 * num_cells * magnitude
    scale = (num_cells - 2) / torch.maximum(hi - lo, floor)
    bias = 2.5 - lo * scale
    workspace = workspace if workspace is not None else _Workspace()
    x = workspace.get('x', (num_rows, num_cols), mat.dtype, device)
    if from_similarity:  # d = 1 - s: x = (bias + scale) - s * scale
        torch.addcmul((bias + scale)[:, None], mat, -scale[:, None], out=x)
    else:
        torch.addcmul(bias[:, None], mat, scale[:, None], out=x)
    x.clamp_(0.0, num_cells + 3.0)
    cell = workspace.get('cell', (num_rows, num_cols), torch.int64 if wide else torch.int32, device)
    cell.copy_(x)  # floor (x >= 0)
    del x
    run_cell = cell[run_rows, run_cols].to(torch.int64)
    flat = cell
    flat += (torch.arange(num_rows, device=device, dtype=cell.dtype) * bins)[:, None]
    hist = torch.bincount(flat.view(-1), minlength=num_rows * bins)
    near = torch.zeros(num_rows * bins, dtype=torch.bool, device=device)
    for shift in (-1, 0, 1):
        near[run_rows * bins + run_cell + shift] = True
    is_near = workspace.get('near', (num_rows * num_cols,), torch.bool, device)
    torch.index_select(near, 0, flat.view(-1), out=is_near)
    is_near = is_near.view(num_rows, num_cols)
    near_rows, near_cols = is_near.nonzero(as_tuple=True)
    del is_near
    near_flat = flat[near_rows, near_cols].to(torch.int64)
    del flat, cell

    # Exact placement of the near samples among [u_0, next(u_0), u_1, ...].
    width = 2 * max_runs
    bounds = torch.full((num_rows, width), float('inf'), dtype=values.dtype, device=device)
    bounds[run_rows, 2 * run_slot] = run_values
    bounds[run_rows, 2 * run_slot + 1] = torch.nextafter(
        run_values, run_values.new_tensor(float('inf'))
    )
    slot = _exact_slots(bounds, near_rows, distance(near_rows, near_cols))
    exact = torch.bincount(near_rows * (width + 1) + slot, minlength=num_rows * (width + 1))
    exact = exact.view(num_rows, width + 1).cumsum(1)  # [r, k]: near samples with slot <= k
    hist -= torch.bincount(near_flat, minlength=num_rows * bins)
    far = hist.view(num_rows, bins).cumsum(1)  # [r, c]: far samples in cells <= c

    # #{d < u_i}: far samples two cells or more below u_i's cell, near
    # samples below u_i (slot <= 2 i)
    closer = far[run_rows, run_cell - 2] + exact[run_rows, 2 * run_slot]
    pos = closer[run_id]

    # 3. Equal distance, smaller gallery index.
    tie = (slot & 1).bool()
    eq_rows, eq_cols = near_rows[tie], near_cols[tie]
    eq_run = first_run[eq_rows] + (slot[tie] - 1) // 2
    run_end = torch.searchsorted(run_id, torch.arange(num_runs, device=device), right=True)
    key = run_id * (num_cols + 1) + cols  # increasing along the entries
    eq_begin = torch.searchsorted(key, eq_run * (num_cols + 1) + eq_cols, right=True)
    eq_end = run_end[eq_run]
    diff = torch.zeros(num + 1, dtype=torch.int64, device=device)
    ones = torch.ones_like(eq_begin)
    diff.index_add_(0, eq_begin, ones).index_add_(0, eq_end, -ones)
    pos += diff.cumsum(0)[:num]
    return rows, cols, pos


#: Intra-op threads of the ranking passes. They are many short elementwise
#: passes: thread start / barrier costs eat what a second thread gains, and on
#: a busy machine a descheduled thread stalls every pass (measured: 2.4 s with
#: one thread against 7.5 s with two for 3,000 x 20,000 under load). The
#: distance matrix products keep torch's threads.
RANK_THREADS = 1


@contextlib.contextmanager
def _intra_op_threads(num: Optional[int]):
    """Run the block with ``num`` torch intra-op threads (None: unchanged), then restore."""
    previous = torch.get_num_threads()
    if num is None or num >= previous:
        yield
        return
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _GalleryByPid:
    """The gallery grouped by identity, to list a query's true matches without a pass.

    Args:
        gallery_pids (torch.Tensor): ``(G,)`` int64 identities.
    """

    def __init__(self, gallery_pids: torch.Tensor) -> None:
        order = torch.sort(gallery_pids, stable=True).indices
        self.pids, counts = torch.unique_consecutive(gallery_pids[order], return_counts=True)
        self.starts = torch.zeros(self.pids.shape[0] + 1, dtype=torch.int64, device=order.device)
        self.starts[1:] = counts.cumsum(0)
        self.order = order

    def matches(self, query_pids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(rows, cols)`` of every (query, gallery) pair of one identity.

        Args:
            query_pids (torch.Tensor): ``(C,)`` int64 identities.

        Returns:
            tuple: int64 query rows and gallery columns, by row then column.
        """
        where = torch.searchsorted(self.pids, query_pids).clamp_max(self.pids.shape[0] - 1)
        found = self.pids[where] == query_pids
        begin = self.starts[where]
        count = torch.where(found, self.starts[where + 1] - begin, 0)
        dev = count.device
        rows = torch.repeat_interleave(torch.arange(query_pids.shape[0], device=dev), count)
        offset = torch.arange(rows.shape[0], device=dev) - (count.cumsum(0) - count)[rows]
        return rows, self.order[begin[rows] + offset]


class _RankAccumulator:
    """Vectorised evaluation of chunks of queries, summed over chunks.

    Args:
        gallery_pids (torch.Tensor): ``(G,)`` int64 gallery identities.
        gallery_groups (torch.Tensor, optional): ``(G,)`` int64 cameras or
            scenes; None when nothing is removed.
        max_rank (int): CMC length.
    """

    def __init__(
        self, gallery_pids: torch.Tensor, gallery_groups: Optional[torch.Tensor], max_rank: int
    ) -> None:
        self.g_pids = gallery_pids
        self.g_groups = gallery_groups
        self.by_pid = _GalleryByPid(gallery_pids)
        self.workspace = _Workspace()
        self.max_rank = max_rank
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.cmc_counts = torch.zeros(max_rank, dtype=torch.int64)
        self.num_valid = 0
        self.num_invalid = 0

    def add(
        self,
        mat: torch.Tensor,
        q_pids: torch.Tensor,
        q_groups: Optional[torch.Tensor],
        from_similarity: bool = False,
    ) -> None:
        """Evaluate the queries of one chunk.

        Only the true-match entries are handled individually: their positions
        in the stable ranking (see :func:`_positions_by_count`), then
        segmented cumulative sums over each row give the number of removed
        samples before each match (hence its position in the kept ranking)
        and the match's rank among the row's kept matches.

        Args:
            mat (torch.Tensor): ``(C, G)`` float64 distances, or cosine
                similarities with ``from_similarity`` (finite; not modified).
            q_pids (torch.Tensor): ``(C,)`` int64 query identities.
            q_groups (torch.Tensor, optional): ``(C,)`` int64 query cameras
                or scenes; None when nothing is removed.
            from_similarity (bool): ``mat`` holds similarities (distance
                ``1 - s``). Defaults to False.
        """
        with _intra_op_threads(RANK_THREADS if mat.device.type == 'cpu' else None):
            self._add(mat, q_pids, q_groups, from_similarity)

    def _add(
        self,
        mat: torch.Tensor,
        q_pids: torch.Tensor,
        q_groups: Optional[torch.Tensor],
        from_similarity: bool,
    ) -> None:
        if not from_similarity and not bool(torch.isfinite(mat).all()):
            if bool(torch.isnan(mat).any()):
                raise ValueError(
                    'The distances contain NaN (a NaN in distmat, or NaN/infinite features).'
                )
            big = torch.finfo(mat.dtype).max  # +-inf rank last/first, ties in gallery order
            mat = torch.nan_to_num(mat, posinf=big, neginf=-big)
        num_rows, num_cols = mat.shape
        device = mat.device
        match_rows, match_cols = self.by_pid.matches(q_pids)
        rows, gallery_idx, pos = _positions_by_count(
            mat,
            rows=match_rows,
            cols=match_cols,
            from_similarity=from_similarity,
            workspace=self.workspace,
        )
        if self.g_groups is None:
            removed = torch.zeros_like(rows, dtype=torch.bool)
        else:
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

    def summary(self, rule: str) -> Dict[str, Union[float, int, np.ndarray]]:
        """The metrics over all chunks added so far (see :func:`evaluate_rank`)."""
        return _summary(
            self.ap_sum,
            self.inp_sum,
            self.cmc_counts.cumsum(0).numpy(),
            self.num_valid,
            self.num_invalid,
            rule,
        )


def _resolve_device(
    device: Optional[Union[str, torch.device]], reference: ArrayLike
) -> Optional[torch.device]:
    if device is not None:
        return torch.device(device)
    if isinstance(reference, torch.Tensor):
        return reference.device
    return torch.device('cpu')


def _accumulator(g_pids, g_groups, max_rank, dev) -> _RankAccumulator:
    groups = None if g_groups is None else torch.from_numpy(g_groups).to(dev)
    return _RankAccumulator(torch.from_numpy(g_pids).to(dev), groups, max_rank)


def evaluate_distmat(
    distmat: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: Optional[ArrayLike],
    gallery_camids: Optional[ArrayLike],
    max_rank: int = 50,
    query_sceneids: Optional[ArrayLike] = None,
    gallery_sceneids: Optional[ArrayLike] = None,
    chunk_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    removal_rule: Optional[str] = None,
) -> Dict[str, Union[float, int, np.ndarray]]:
    """Vectorised :func:`evaluate_rank` for a given distance matrix.

    Same arguments, rules and result as :func:`evaluate_rank` (use it e.g.
    on a re-ranked matrix); the queries are processed in chunks with PyTorch.

    Args:
        distmat (ArrayLike): ``(Q, G)`` distances, compared as float64.
        query_pids (ArrayLike): ``(Q,)`` query identities.
        gallery_pids (ArrayLike): ``(G,)`` gallery identities.
        query_camids (ArrayLike, optional): ``(Q,)`` query cameras (None only
            when the rule does not use cameras).
        gallery_camids (ArrayLike, optional): ``(G,)`` gallery cameras.
        max_rank (int): CMC length, >= 1. Defaults to 50.
        query_sceneids (ArrayLike, optional): Query scenes (scene rule).
            Defaults to None.
        gallery_sceneids (ArrayLike, optional): Gallery scenes. Defaults to
            None.
        chunk_size (int, optional): Queries per chunk. Defaults to None,
            which keeps a chunk near 256 MiB of working memory.
        device (str | torch.device, optional): Where to compute. Defaults to
            None: the matrix's device (CPU for NumPy input).
        removal_rule (str, optional): ``'camera'``, ``'scene'`` or ``'none'``.
            Defaults to None (scenes when scene ids are given, else cameras).

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
    q_pids, g_pids, q_groups, g_groups, rule = check_id_arrays(
        num_q,
        num_g,
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        query_sceneids,
        gallery_sceneids,
        removal_rule,
    )
    _check_distmat_shape(tuple(dist.shape), num_q, num_g)
    chunk_size = check_chunk_size(chunk_size, num_g)
    acc = _accumulator(g_pids, g_groups, max_rank, dev)
    q_pids_t = torch.from_numpy(q_pids).to(dev)
    q_groups_t = None if q_groups is None else torch.from_numpy(q_groups).to(dev)
    for start in range(0, num_q, chunk_size):
        stop = start + chunk_size
        chunk = dist[start:stop].to(torch.float64)
        groups = None if q_groups_t is None else q_groups_t[start:stop]
        acc.add(chunk, q_pids_t[start:stop], groups)
    return acc.summary(rule)


def evaluate_features(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: Optional[ArrayLike],
    gallery_camids: Optional[ArrayLike],
    max_rank: int = 50,
    query_sceneids: Optional[ArrayLike] = None,
    gallery_sceneids: Optional[ArrayLike] = None,
    metric: str = 'cosine',
    chunk_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    removal_rule: Optional[str] = None,
) -> Dict[str, Union[float, int, np.ndarray]]:
    """CMC/mAP/mINP straight from features, in bounded memory.

    Queries are processed ``chunk_size`` at a time: the chunk's float64
    similarities (cosine) or distances (the same computation as
    :func:`~mmdmpt.evaluation.functional.compute_distance`), then the
    stable-sort position of every true match found by counting, without
    sorting the gallery (:func:`_positions_by_count`), and vectorised
    bookkeeping on those entries only. Peak extra memory is about
    ``40 * chunk_size * G`` bytes plus the float64 copy of the gallery
    features; the full ``(Q, G)`` distance or rank matrix is never built.
    Results equal :func:`evaluate_rank` on
    ``compute_distance(query_feats, gallery_feats, metric)`` (up to float
    rounding of the means, and of distances that differ in the last bit
    between a chunk and the full matrix product).

    Args:
        query_feats (ArrayLike): ``(Q, D)`` query features (NumPy or tensor).
        gallery_feats (ArrayLike): ``(G, D)`` gallery features.
        query_pids (ArrayLike): ``(Q,)`` query identities.
        gallery_pids (ArrayLike): ``(G,)`` gallery identities.
        query_camids (ArrayLike, optional): ``(Q,)`` query cameras (None only
            when the rule does not use cameras).
        gallery_camids (ArrayLike, optional): ``(G,)`` gallery cameras.
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
        removal_rule (str, optional): ``'camera'``, ``'scene'`` or ``'none'``.
            Defaults to None (scenes when scene ids are given, else cameras).

    Returns:
        dict: As :func:`evaluate_rank`.
    """
    check_metric(metric)
    max_rank = check_max_rank(max_rank)
    dev = _resolve_device(device, query_feats)
    q_feats, g_feats = check_features(query_feats, gallery_feats, dev)
    num_q, num_g = q_feats.shape[0], g_feats.shape[0]
    q_pids, g_pids, q_groups, g_groups, rule = check_id_arrays(
        num_q,
        num_g,
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        query_sceneids,
        gallery_sceneids,
        removal_rule,
    )
    chunk_size = check_chunk_size(chunk_size, num_g)
    cosine = metric == 'cosine'
    if cosine and not (torch.isfinite(q_feats).all() and torch.isfinite(g_feats).all()):
        raise ValueError('The distances contain NaN (NaN/infinite features).')
    g_ops = prepare_features(g_feats, metric, deduplicate=True)
    acc = _accumulator(g_pids, g_groups, max_rank, dev)
    q_pids_t = torch.from_numpy(q_pids).to(dev)
    q_groups_t = None if q_groups is None else torch.from_numpy(q_groups).to(dev)
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        q_ops = prepare_features(q_feats[start:stop], metric)
        if cosine:
            # similarities into a reused buffer; the distance 1 - s is formed
            # only where it is compared exactly
            shape = (stop - start, g_ops.feats.shape[0])
            mat = acc.workspace.get('similarity', shape, torch.float64, dev)
            torch.matmul(q_ops.feats, g_ops.feats.T, out=mat)
            if g_ops.inverse is not None:
                mat = mat[:, g_ops.inverse]
        else:
            mat = pairwise_distance(q_ops, g_ops, metric)
        groups = None if q_groups_t is None else q_groups_t[start:stop]
        acc.add(mat, q_pids_t[start:stop], groups, from_similarity=cosine)
        del mat
    return acc.summary(rule)
