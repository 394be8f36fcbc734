"""Query-gallery distances and chunked top-k gallery search.

All distances are computed in ``float64`` by one code path,
:func:`compute_distance`, which the reference evaluation
(:func:`~mmdmpt.evaluation.functional.evaluate_rank` fed with its output) and
the chunked evaluation (:func:`~mmdmpt.evaluation.functional.evaluate_features`)
both use, so that ties in distance are the same ties in both.

Supported metrics:

- ``'cosine'``: ``1 - cos(q, g)``; the features are L2-normalised inside, so
  the distance lies in ``[0, 2]``.
- ``'euclidean'``: the plain (not squared) Euclidean distance
  ``||q - g||_2`` of the features as given (normalise them first for the
  usual ReID protocol; on L2-normalised features it ranks exactly like
  cosine, being ``sqrt(2 * cosine)``).
"""

from typing import NamedTuple, Optional, Tuple, Union

import torch

from ._utils import ArrayLike, check_features, check_metric

#: Bytes of working memory per (query, gallery) pair used to size chunks: the
#: float64 distance, about three float64/int64 temporaries of the ranking
#: step and a few boolean masks.
BYTES_PER_PAIR = 40
#: Working-memory budget per chunk used when ``chunk_size`` is None (256 MiB,
#: i.e. 134 queries at a gallery of 50,000).
DEFAULT_CHUNK_BYTES = 256 * 1024**2


def auto_chunk_size(num_gallery: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Number of queries per chunk that keeps the working set near a budget.

    Args:
        num_gallery (int): Gallery size.
        budget_bytes (int): Memory budget of one chunk. Defaults to
            :data:`DEFAULT_CHUNK_BYTES` (256 MiB).

    Returns:
        int: ``max(1, budget_bytes // (num_gallery * BYTES_PER_PAIR))``.
    """
    return max(1, int(budget_bytes // (max(num_gallery, 1) * BYTES_PER_PAIR)))


def check_chunk_size(chunk_size: Optional[int], num_gallery: int) -> int:
    """Return a valid chunk size, choosing one when ``chunk_size`` is None."""
    if chunk_size is None:
        return auto_chunk_size(num_gallery)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f'chunk_size must be a positive int or None, got {chunk_size!r}.')
    return chunk_size


class Operands(NamedTuple):
    """Float64 operands of :func:`pairwise_distance`.

    Attributes:
        feats (torch.Tensor): ``(U, D)`` features, L2-normalised for cosine;
            the distinct rows only when ``inverse`` is set.
        sq_norms (torch.Tensor): ``(U,)`` squared norms (Euclidean) or an
            empty tensor (cosine).
        inverse (torch.Tensor, optional): ``(N,)`` row of ``feats`` for each
            original sample, or None when the rows are used as they are.
    """

    feats: torch.Tensor
    sq_norms: torch.Tensor
    inverse: Optional[torch.Tensor]


def _duplicate_rows(feats: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(distinct_rows, inverse)`` when ``feats`` has identical rows, else None.

    A matrix product may round the same dot product differently at different
    output positions, so identical gallery samples could get distances that
    differ in the last bit and lose their tie. Computing each distinct row once
    and copying it keeps such ties exact. Rows are first screened with an
    exact, order-independent integer hash of their bits.
    """
    if feats.shape[0] < 2:
        return None
    gen = torch.Generator().manual_seed(0)
    mult = torch.randint(1, 2**62, (feats.shape[1],), generator=gen, dtype=torch.int64)
    mult = (mult | 1).to(feats.device)
    keys = torch.empty(feats.shape[0], dtype=torch.int64, device=feats.device)
    for start in range(0, feats.shape[0], 4096):
        bits = feats[start : start + 4096].contiguous().view(torch.int64)
        keys[start : start + 4096] = (bits * mult).sum(dim=1)  # wraps: exact in any order
    if torch.unique(keys).numel() == feats.shape[0]:
        return None
    distinct, inverse = torch.unique(feats, dim=0, return_inverse=True)
    return distinct, inverse


def prepare_features(feats: torch.Tensor, metric: str, deduplicate: bool = False) -> Operands:
    """Turn features into the float64 operands of :func:`pairwise_distance`.

    Args:
        feats (torch.Tensor): ``(N, D)`` features.
        metric (str): ``'cosine'`` or ``'euclidean'``.
        deduplicate (bool): Compute identical rows once (used for the gallery
            side) so that their distances tie exactly. Defaults to False.

    Returns:
        Operands: Normalised (cosine) or raw features with squared norms
        (Euclidean), in float64.
    """
    feats = feats.to(torch.float64, copy=True).add_(0.0)  # own copy; -0.0 becomes +0.0
    inverse = None
    if deduplicate:
        found = _duplicate_rows(feats)
        if found is not None:
            feats, inverse = found
    if metric == 'cosine':
        feats.div_(feats.norm(dim=1, keepdim=True).clamp_min_(1e-12))
        return Operands(feats, feats.new_empty(0), inverse)
    return Operands(feats, (feats * feats).sum(dim=1), inverse)


def pairwise_distance(query: Operands, gallery: Operands, metric: str) -> torch.Tensor:
    """Distances between operands made by :func:`prepare_features`.

    Args:
        query (Operands): Prepared query operands (not deduplicated).
        gallery (Operands): Prepared gallery operands.
        metric (str): ``'cosine'`` or ``'euclidean'``.

    Returns:
        torch.Tensor: ``(Q, G)`` float64 distances.
    """
    if query.inverse is not None:
        raise ValueError('Only the gallery operands may be deduplicated.')
    dist = query.feats @ gallery.feats.T
    if metric == 'cosine':
        dist.neg_().add_(1.0)
    else:
        dist.mul_(-2.0).add_(query.sq_norms[:, None]).add_(gallery.sq_norms[None, :])
        dist.clamp_min_(0.0).sqrt_()
    dist.add_(0.0)  # one zero for every sort: -0.0 becomes +0.0
    if gallery.inverse is not None:
        dist = dist[:, gallery.inverse]
    return dist


def compute_distance(
    query_feats: ArrayLike, gallery_feats: ArrayLike, metric: str = 'cosine'
) -> torch.Tensor:
    """Full query-gallery distance matrix in float64.

    This materialises the whole ``(Q, G)`` matrix; use
    :func:`~mmdmpt.evaluation.functional.evaluate_features` or
    :func:`search_topk` for large sets.

    Args:
        query_feats (ArrayLike): ``(Q, D)`` features, NumPy or tensor.
        gallery_feats (ArrayLike): ``(G, D)`` features.
        metric (str): ``'cosine'`` (``1 - cos``, normalised inside) or
            ``'euclidean'`` (plain, not squared). Defaults to ``'cosine'``.

    Returns:
        torch.Tensor: ``(Q, G)`` float64 distances on the query features'
        device (CPU for NumPy input).
    """
    check_metric(metric)
    q, g = check_features(query_feats, gallery_feats)
    g_ops = prepare_features(g, metric, deduplicate=True)
    return pairwise_distance(prepare_features(q, metric), g_ops, metric)


def stable_topk(dist: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row, in stable order (ties by column).

    Equal to ``torch.sort(dist, dim=1, stable=True)`` cut to ``k`` columns,
    without sorting whole rows: ``torch.topk`` picks the candidates, and only
    rows where entries equal to the ``k``-th value straddle the cut are
    sorted in full.

    Args:
        dist (torch.Tensor): ``(C, N)`` distances without NaN.
        k (int): ``1 <= k <= N``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``(values, indices)``, ``(C, k)``.
    """
    if k >= dist.shape[1]:
        values, order = torch.sort(dist, dim=1, stable=True)
        return values, order
    values, order = torch.topk(dist, k, dim=1, largest=False, sorted=False)
    kth = values.max(dim=1, keepdim=True).values
    straddle = (dist <= kth).sum(dim=1) > k
    # the candidates of a clean row are exactly its k smallest: order them by
    # (value, column)
    order, perm = torch.sort(order, dim=1)
    values = torch.gather(values, 1, perm)
    values, perm = torch.sort(values, dim=1, stable=True)
    order = torch.gather(order, 1, perm)
    if bool(straddle.any()):
        rows = straddle.nonzero().flatten()
        full_values, full_order = torch.sort(dist[rows], dim=1, stable=True)
        values[rows] = full_values[:, :k]
        order[rows] = full_order[:, :k]
    return values, order


def search_topk(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k: int,
    metric: str = 'cosine',
    chunk_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest gallery samples of each query, chunk by chunk.

    Ties in distance keep gallery order (stable sort), exactly as in the
    evaluation; ``k`` larger than the gallery is cut to the gallery size.

    Args:
        query_feats (ArrayLike): ``(Q, D)`` query features.
        gallery_feats (ArrayLike): ``(G, D)`` gallery features.
        k (int): Number of neighbours to return, >= 1.
        metric (str): ``'cosine'`` or ``'euclidean'``. Defaults to
            ``'cosine'``.
        chunk_size (int, optional): Queries per chunk. Defaults to None,
            which keeps a chunk near 256 MiB of working memory.
        device (str | torch.device, optional): Where to compute. Defaults to
            None: the query features' device (CPU for NumPy input).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``(distances, indices)``, each of
        shape ``(Q, min(k, G))``, float64 and int64, nearest first, on the
        compute device.
    """
    check_metric(metric)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f'k must be a positive int, got {k!r}.')
    q, g = check_features(query_feats, gallery_feats, torch.device(device) if device else None)
    if g.shape[0] == 0:
        raise ValueError('The gallery is empty.')
    k = min(k, g.shape[0])
    chunk_size = check_chunk_size(chunk_size, g.shape[0])
    g_ops = prepare_features(g, metric, deduplicate=True)
    dists, indices = [], []
    for start in range(0, q.shape[0], chunk_size):
        dist = pairwise_distance(
            prepare_features(q[start : start + chunk_size], metric), g_ops, metric
        )
        values, order = stable_topk(dist, k)
        dists.append(values)
        indices.append(order)
        del dist, values, order
    if not dists:
        return g.new_empty((0, k), dtype=torch.float64), g.new_empty((0, k), dtype=torch.int64)
    return torch.cat(dists), torch.cat(indices)
