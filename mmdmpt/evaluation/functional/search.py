"""Top-k gallery search with the benchmarks' removal rule, exact or with FAISS.

Distances and ties are those of the evaluation: float64 distances computed as
:func:`~mmdmpt.evaluation.functional.compute_distance` does, stable order
(equal distances keep gallery order), identical gallery rows tied exactly.

Backends of :class:`GallerySearcher`:

- ``'torch'`` (default): exact search with PyTorch. Galleries whose float64
  copy fits ``float64_bytes`` are prepared once; larger ones are processed in
  blocks (prepared per query chunk), so memory stays near the features
  themselves.
- ``'faiss'`` with ``index='flat'``: an exact FAISS index (inner product for
  cosine, L2 for Euclidean) proposes candidates in float32; they are scored
  again in float64 and kept only when a bound on the float32 error proves
  that no other gallery sample can come before them (otherwise more are
  fetched), so the result is the one of the ``'torch'`` backend.
- ``'faiss'`` with ``index='ivf'`` (inverted lists) or ``'hnsw'`` (graph):
  approximate; the candidates found are scored in float64 and ordered as
  above, but true neighbours may be missed (measured in
  ``benchmarks/search_scale.py``).

The removal rule is applied exactly by every backend: each query fetches as
many extra candidates as the gallery has samples it removes, then drops them.
"""

import math
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from mmdmpt.utils.errors import ConfigError

from ._utils import check_ids, check_metric, check_removal_rule
from .distance import (
    DEFAULT_CHUNK_BYTES,
    check_chunk_size,
    pairwise_distance,
    prepare_features,
    stable_topk,
)

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]
GalleryMeta = Union[Mapping[str, Sequence], Sequence[Mapping[str, Any]]]

__all__ = [
    'BACKENDS',
    'INDEX_TYPES',
    'SearchResult',
    'GallerySearcher',
    'search_gallery',
    'stable_topk',
]

#: Search backends of :class:`GallerySearcher`.
BACKENDS = ('torch', 'faiss')
#: FAISS index types: exact ``'flat'``, approximate ``'ivf'`` and ``'hnsw'``.
INDEX_TYPES = ('flat', 'ivf', 'hnsw')
#: Default float64 budget of a prepared gallery (larger galleries go in blocks).
DEFAULT_FLOAT64_BYTES = 1 << 30
_INDEX_OPTIONS = {
    'ivf': ('nlist', 'nprobe', 'train_size', 'seed'),
    'hnsw': ('m', 'ef_search', 'ef_construction'),
    'flat': (),
}
_FLOAT32_EPS = 2.0**-24


class SearchResult(NamedTuple):
    """Result of a gallery search.

    Attributes:
        indices (torch.Tensor): ``(Q, k)`` int64 gallery indices, nearest
            first; ``-1`` pads a row when fewer than ``k`` gallery samples are
            left after the removal rule.
        distances (torch.Tensor): ``(Q, k)`` float64 distances (``inf`` where
            padded).
        meta (list, optional): Per query, the list of metadata dicts of its
            results (``None`` where padded); None when the searcher has no
            gallery metadata.
    """

    indices: torch.Tensor
    distances: torch.Tensor
    meta: Optional[List[List[Optional[Dict[str, Any]]]]]


def _meta_rows(meta: Optional[GalleryMeta], num: int) -> Optional[List[Dict[str, Any]]]:
    """Normalise gallery metadata to one dict per gallery sample."""
    if meta is None:
        return None
    if isinstance(meta, Mapping):
        rows: List[Dict[str, Any]] = [dict() for _ in range(num)]
        for key, values in meta.items():
            if isinstance(values, torch.Tensor):
                values = values.tolist()
            elif isinstance(values, np.ndarray):
                values = values.tolist()
            if len(values) != num:
                raise ValueError(
                    f'gallery_meta[{key!r}] has {len(values)} entries for {num} gallery samples.'
                )
            for row, value in zip(rows, values):
                row[key] = value
        return rows
    rows = [dict(m) for m in meta]
    if len(rows) != num:
        raise ValueError(f'gallery_meta has {len(rows)} entries for {num} gallery samples.')
    return rows


class _Distinct:
    """Distinct gallery rows, by first occurrence, and the samples holding each.

    Identical gallery samples must tie exactly (the evaluation's rule); the
    search runs over the distinct rows and gives each found row back as its
    samples. Found cheaply (a hash of each row's bits) when there is no
    duplicate, the common case.

    Args:
        feats (torch.Tensor): ``(G, D)`` gallery features.
    """

    def __init__(self, feats: torch.Tensor) -> None:
        num = feats.shape[0]
        self.num_gallery = num
        self.index: Optional[torch.Tensor] = None  # distinct row -> first sample
        self.members: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        if num < 2:
            return
        gen = torch.Generator().manual_seed(0)
        bits_dtype = {8: torch.int64, 4: torch.int32, 2: torch.int16}.get(feats.element_size())
        if bits_dtype is None:
            feats = feats.double()
            bits_dtype = torch.int64
        mult = torch.randint(1, 2**62, (feats.shape[1],), generator=gen, dtype=torch.int64)
        mult = (mult | 1).to(feats.device)
        keys = torch.empty(num, dtype=torch.int64, device=feats.device)
        for start in range(0, num, 4096):
            rows = feats[start : start + 4096] + 0  # -0.0 and 0.0 are one value
            bits = rows.contiguous().view(bits_dtype).to(torch.int64)
            keys[start : start + 4096] = (bits * mult).sum(dim=1)  # wraps: exact in any order
        uniq, inverse = torch.unique(keys, return_inverse=True)
        if uniq.numel() == num:
            return
        # candidates share a hash; confirm on the rows themselves
        _, inverse = torch.unique(feats, dim=0, return_inverse=True)
        num_distinct = int(inverse.max()) + 1
        if num_distinct == num:
            return
        first = torch.full((num_distinct,), num, dtype=torch.int64, device=feats.device)
        first.scatter_reduce_(0, inverse, torch.arange(num, device=feats.device), 'amin')
        order = torch.sort(first).indices  # distinct rows by first occurrence
        rank = torch.empty_like(order)
        rank[order] = torch.arange(num_distinct, device=feats.device)
        group = rank[inverse]  # sample -> distinct row (by first occurrence)
        by_group = torch.sort(group, stable=True).indices  # samples grouped, in index order
        counts = torch.bincount(group, minlength=num_distinct)
        starts = torch.zeros(num_distinct + 1, dtype=torch.int64, device=feats.device)
        starts[1:] = counts.cumsum(0)
        self.index = first[order]
        self.members = (by_group, starts)

    @property
    def num(self) -> int:
        """int: Number of distinct rows."""
        return self.num_gallery if self.index is None else int(self.index.numel())

    @property
    def max_multiplicity(self) -> int:
        """int: The most samples sharing one row."""
        if self.members is None:
            return 1
        starts = self.members[1]
        return int((starts[1:] - starts[:-1]).max())

    def select(self, feats: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The features of distinct rows ``start .. stop - 1`` (a view when possible)."""
        if self.index is None:
            return feats[start:stop]
        return feats[self.index[start:stop].to(feats.device)]

    def samples(self, distinct_rows: torch.Tensor) -> torch.Tensor:
        """Gallery sample index of some distinct rows."""
        return distinct_rows if self.index is None else self.index[distinct_rows]

    def expand(
        self, dist: torch.Tensor, idx: torch.Tensor, need: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Distinct-row results -> sample results, in stable order.

        Args:
            dist (torch.Tensor): ``(C, K)`` float64 distances of distinct rows.
            idx (torch.Tensor): ``(C, K)`` distinct-row indices (``-1``
                padding allowed).
            need (int): Columns to return.

        Returns:
            tuple: ``(dist, idx)`` of shape ``(C, need)`` with gallery sample
            indices, ordered by (distance, index), ``inf`` / ``-1`` padded.
        """
        if self.members is None:
            dist, idx = _pad(dist, idx, need)
            return dist[:, :need], idx[:, :need]
        by_group, starts = self.members
        rows_out_d, rows_out_i = [], []
        for row_d, row_i in zip(dist.tolist(), idx.tolist()):
            pairs = []
            for d, r in zip(row_d, row_i):
                if r < 0:
                    continue
                for j in by_group[starts[r] : starts[r + 1]].tolist():
                    pairs.append((d, j))
            pairs.sort()
            pairs = pairs[:need]
            rows_out_d.append([p[0] for p in pairs] + [math.inf] * (need - len(pairs)))
            rows_out_i.append([p[1] for p in pairs] + [-1] * (need - len(pairs)))
        return (
            torch.tensor(rows_out_d, dtype=torch.float64).reshape(-1, need),
            torch.tensor(rows_out_i, dtype=torch.int64).reshape(-1, need),
        )


def _pad(dist: torch.Tensor, idx: torch.Tensor, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pad ``(C, K)`` results to at least ``width`` columns with ``inf`` / ``-1``."""
    if dist.shape[1] >= width:
        return dist, idx
    extra = width - dist.shape[1]
    pad_d = torch.full((dist.shape[0], extra), math.inf, dtype=dist.dtype)
    pad_i = torch.full((idx.shape[0], extra), -1, dtype=idx.dtype)
    return torch.cat([dist, pad_d], 1), torch.cat([idx, pad_i], 1)


class _RemovalGroups:
    """How many gallery samples each (identity, group) key holds, for the removal rule."""

    def __init__(self, pids: np.ndarray, groups: np.ndarray) -> None:
        pairs, counts = np.unique(np.stack([pids, groups], axis=1), axis=0, return_counts=True)
        self.counts = {(int(p), int(g)): int(c) for (p, g), c in zip(pairs, counts)}
        self.pids = torch.from_numpy(pids)
        self.groups = torch.from_numpy(groups)

    def removed_counts(self, q_pids: np.ndarray, q_groups: np.ndarray) -> np.ndarray:
        """Samples each query removes."""
        return np.array(
            [self.counts.get((int(p), int(g)), 0) for p, g in zip(q_pids, q_groups)],
            dtype=np.int64,
        )

    def removed(self, idx: torch.Tensor, q_pids: torch.Tensor, q_groups: torch.Tensor):
        """``(C, K)`` bool: which of the found samples the query removes."""
        safe = idx.clamp_min(0)
        hit = (self.pids[safe] == q_pids[:, None]) & (self.groups[safe] == q_groups[:, None])
        return hit & (idx >= 0)


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "backend='faiss' needs the faiss-cpu package: pip install -r requirements/faiss.txt "
            "(or pip install -e '.[faiss]'); or use backend='torch' (exact, the default)."
        ) from None
    return faiss


class GallerySearcher:
    """Search a fixed gallery for the nearest samples of queries.

    When gallery identities and cameras (or scenes) are given, a query can
    hide the samples that the benchmark's evaluation removes from its
    ranking: those with the query's identity and the query's camera -- or,
    with scene ids (MSVR310), the query's identity and scene, whatever the
    camera; ``removal_rule='none'`` removes nothing (data without cameras).
    The remaining ranking is exactly the one the metric scores.

    Args:
        gallery_feats (ArrayLike): ``(G, D)`` gallery features.
        metric (str): ``'cosine'`` or ``'euclidean'`` (plain, not squared).
            Defaults to ``'cosine'``.
        gallery_meta (Mapping | Sequence[Mapping], optional): Metadata
            returned with the results: a dict of per-sample sequences
            (e.g. ``{'pid': [...], 'img_paths': [...]}``) or one dict per
            gallery sample. Defaults to None.
        gallery_pids (ArrayLike, optional): ``(G,)`` identities, needed for
            the removal rule. Defaults to None.
        gallery_camids (ArrayLike, optional): ``(G,)`` cameras. Defaults to
            None.
        gallery_sceneids (ArrayLike, optional): ``(G,)`` scenes; when given
            (and ``removal_rule`` is None) the rule is same id and same scene.
            Defaults to None.
        chunk_size (int, optional): Queries per distance chunk. Defaults to
            None (about 256 MiB of working memory per chunk).
        device (str | torch.device, optional): Where the ``'torch'`` backend
            computes. Defaults to None (the device of the features; CPU for
            NumPy).
        removal_rule (str, optional): ``'camera'``, ``'scene'`` or ``'none'``.
            Defaults to None: scenes when ``gallery_sceneids`` is given, else
            cameras.
        backend (str): ``'torch'`` (exact) or ``'faiss'``. Defaults to
            ``'torch'``.
        index (str): FAISS index: ``'flat'`` (exact, results equal to the
            ``'torch'`` backend), ``'ivf'`` or ``'hnsw'`` (approximate).
            Defaults to ``'flat'``.
        index_options (dict, optional): ``'ivf'``: ``nlist`` (lists; default
            the power of two nearest ``sqrt(G)``), ``nprobe`` (lists searched; default 16),
            ``train_size`` (samples for k-means; default ``64 * nlist``),
            ``seed``; ``'hnsw'``: ``m`` (links; default 32), ``ef_search``
            (default 128), ``ef_construction`` (default 64). Defaults to None.
        float64_bytes (int): The ``'torch'`` backend keeps the prepared float64
            gallery when it fits this many bytes, else computes it block by
            block for each query chunk. Defaults to 1 GiB.

    Examples:
        >>> searcher = GallerySearcher(gallery_feats, gallery_meta={'pid': pids})
        >>> result = searcher.search(query_feats, k=5)
        >>> result.indices.shape
        torch.Size([num_queries, 5])
    """

    def __init__(
        self,
        gallery_feats: ArrayLike,
        metric: str = 'cosine',
        gallery_meta: Optional[GalleryMeta] = None,
        gallery_pids: Optional[ArrayLike] = None,
        gallery_camids: Optional[ArrayLike] = None,
        gallery_sceneids: Optional[ArrayLike] = None,
        chunk_size: Optional[int] = None,
        device: Optional[Union[str, torch.device]] = None,
        removal_rule: Optional[str] = None,
        backend: str = 'torch',
        index: str = 'flat',
        index_options: Optional[Dict[str, Any]] = None,
        float64_bytes: int = DEFAULT_FLOAT64_BYTES,
    ) -> None:
        try:
            self.metric = check_metric(metric)
            self.removal_rule = check_removal_rule(removal_rule)
        except ValueError as exc:
            raise ConfigError(f'GallerySearcher: {exc}') from None
        if backend not in BACKENDS:
            raise ConfigError(
                f'GallerySearcher: backend must be one of {BACKENDS}, got {backend!r}'
            )
        if index not in INDEX_TYPES:
            raise ConfigError(f'GallerySearcher: index must be one of {INDEX_TYPES}, got {index!r}')
        if backend == 'torch' and index != 'flat':
            raise ConfigError(
                f"GallerySearcher: index={index!r} is a FAISS index; use backend='faiss' "
                "(the 'torch' backend is exact)."
            )
        options = dict(index_options or {})
        unknown = sorted(set(options) - set(_INDEX_OPTIONS[index]))
        if unknown:
            raise ConfigError(
                f'GallerySearcher: unknown index_options {unknown} for index={index!r}; '
                f'allowed: {list(_INDEX_OPTIONS[index])}'
            )
        feats = gallery_feats
        if not isinstance(feats, torch.Tensor):
            feats = torch.as_tensor(np.asarray(feats))
        if feats.dim() != 2 or feats.shape[0] == 0:
            raise ValueError(
                f'gallery_feats must be a non-empty (G, D) array, got shape {tuple(feats.shape)}.'
            )
        if not bool(torch.isfinite(feats).all()):
            raise ValueError('gallery_feats contain NaN or infinite values.')
        self.gallery_feats = feats
        num = feats.shape[0]
        self.gallery_meta = _meta_rows(gallery_meta, num)
        self.gallery_pids = (
            None if gallery_pids is None else check_ids(gallery_pids, 'gallery_pids', num)
        )
        self.gallery_camids = (
            None if gallery_camids is None else check_ids(gallery_camids, 'gallery_camids', num)
        )
        self.gallery_sceneids = (
            None
            if gallery_sceneids is None
            else check_ids(gallery_sceneids, 'gallery_sceneids', num)
        )
        self.chunk_size = chunk_size
        self.device = device
        self.backend = backend
        self.index_type = index
        self.index_options = options
        self.float64_bytes = int(float64_bytes)
        self._groups: Dict[str, _RemovalGroups] = {}
        self._distinct = _Distinct(feats)
        self._prepared = None  # float64 operands of all distinct rows (torch backend)
        self._index = None  # the FAISS index
        self._max_norm = 0.0
        if backend == 'faiss':
            self._build_faiss()
        elif self._distinct.num * feats.shape[1] * 8 <= self.float64_bytes:
            self._prepared = self._prepare_rows(0, self._distinct.num, self._device())

    # ------------------------------------------------------------------ #
    # Properties
    # ------------------------------------------------------------------ #
    @property
    def num_gallery(self) -> int:
        """int: Number of gallery samples."""
        return int(self.gallery_feats.shape[0])

    @property
    def use_scenes(self) -> bool:
        """bool: Whether the removal rule compares scenes instead of cameras."""
        return self.rule == 'scene'

    @property
    def rule(self) -> str:
        """str: The removal rule applied when query ids are given."""
        if self.removal_rule is not None:
            return self.removal_rule
        return 'scene' if self.gallery_sceneids is not None else 'camera'

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return self.gallery_feats.device

    # ------------------------------------------------------------------ #
    # Gallery preparation
    # ------------------------------------------------------------------ #
    def _prepare_rows(self, start: int, stop: int, device: torch.device):
        """Float64 operands of distinct rows ``start .. stop - 1``."""
        rows = self._distinct.select(self.gallery_feats, start, stop)
        return prepare_features(rows.to(device), self.metric)

    def _build_faiss(self) -> None:
        faiss = _import_faiss()
        dim = int(self.gallery_feats.shape[1])
        num = self._distinct.num
        cosine = self.metric == 'cosine'
        metric = faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2
        opts = self.index_options
        if self.index_type == 'flat':
            index = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
        elif self.index_type == 'hnsw':
            index = faiss.IndexHNSWFlat(dim, int(opts.get('m', 32)), metric)
            index.hnsw.efConstruction = int(opts.get('ef_construction', 64))
            index.hnsw.efSearch = int(opts.get('ef_search', 128))
        else:
            default = 2 ** round(math.log2(math.sqrt(num)))  # about sqrt(G) lists
            nlist = int(opts.get('nlist', max(1, min(num // 39, default))))
            quantizer = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
            index.nprobe = int(opts.get('nprobe', 16))
            train_size = min(num, int(opts.get('train_size', 64 * nlist)))
            rng = np.random.default_rng(int(opts.get('seed', 0)))
            sample = np.sort(rng.choice(num, train_size, replace=False))
            index.train(self._float32_rows(torch.from_numpy(sample)))
        block = max(1, (256 << 20) // (dim * 8))
        for start in range(0, num, block):
            stop = min(start + block, num)
            rows = self._float32_rows(torch.arange(start, stop))
            if not cosine:
                norms = np.sqrt((rows.astype(np.float64) ** 2).sum(1)).max()
                self._max_norm = max(self._max_norm, float(norms))
            index.add(rows)
        self._index = index

    def _float32_rows(self, distinct_rows: torch.Tensor) -> np.ndarray:
        """The index's float32 vectors of some distinct rows (normalised for cosine)."""
        samples = self._distinct.samples(distinct_rows)
        ops = prepare_features(self.gallery_feats[samples], self.metric)
        return np.ascontiguousarray(ops.feats.to(torch.float32).numpy())

    # ------------------------------------------------------------------ #
    # Candidates of distinct rows
    # ------------------------------------------------------------------ #
    def _chunk_size(self) -> int:
        """Queries per chunk: bounded ``(C, G)`` distances, or enough to amortise a block pass."""
        if self.chunk_size is not None or self.backend == 'torch' and self._prepared is not None:
            return check_chunk_size(self.chunk_size, self._distinct.num)
        if self.backend == 'faiss':
            return 1024
        return max(64, int(self.gallery_feats.shape[1]))  # blocks of D rows per query row

    def _torch_topk(self, q: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Exact stable top-``k`` distinct rows of each query."""
        device = self._device()
        q_ops = prepare_features(q.to(device), self.metric)
        num = self._distinct.num
        if self._prepared is not None:
            dist = pairwise_distance(q_ops, self._prepared, self.metric)
            values, order = stable_topk(dist, k)
            return values.cpu(), order.cpu()
        dim = int(self.gallery_feats.shape[1])
        block = max(k, int(DEFAULT_CHUNK_BYTES // (8 * max(dim, q.shape[0]))))
        best_d = best_i = None
        for start in range(0, num, block):
            stop = min(start + block, num)
            dist = pairwise_distance(q_ops, self._prepare_rows(start, stop, device), self.metric)
            values, order = stable_topk(dist, min(k, stop - start))
            order = order + start
            if best_d is not None:  # earlier blocks first: ties keep gallery order
                values = torch.cat([best_d, values], 1)
                order = torch.cat([best_i, order], 1)
                values, perm = stable_topk(values, min(k, values.shape[1]))
                order = torch.gather(order, 1, perm)
            best_d, best_i = values, order
        return best_d.cpu(), best_i.cpu()

    def _rescore(self, q_ops, cand: np.ndarray) -> torch.Tensor:
        """Float64 distances of each query to its candidate distinct rows (``-1``: inf)."""
        cand_t = torch.from_numpy(cand)
        valid = cand_t >= 0
        flat = cand_t.clamp_min(0).reshape(-1)
        ops = prepare_features(self.gallery_feats[self._distinct.samples(flat)], self.metric)
        g = ops.feats.view(cand.shape[0], cand.shape[1], -1)
        dots = (q_ops.feats[:, None, :] * g).sum(-1)
        # the operations of pairwise_distance, in its order
        if self.metric == 'cosine':
            dist = torch.sub(1.0, dots)
        else:
            dist = (dots * -2.0 + q_ops.sq_norms[:, None]) + ops.sq_norms.view(cand.shape)
            dist = dist.clamp_min(0.0).sqrt()
        dist = dist + 0.0
        return dist.masked_fill(~valid, math.inf)

    def _faiss_topk(self, q: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` distinct rows by FAISS, scored in float64 (exact for ``'flat'``)."""
        q_ops = prepare_features(q.cpu(), self.metric)
        q32 = np.ascontiguousarray(q_ops.feats.to(torch.float32).numpy())
        num = self._distinct.num
        exact = self.index_type == 'flat'
        fetch = min(num, k + max(16, k) if exact else k)
        rows = np.arange(q32.shape[0])
        out_d = torch.full((q32.shape[0], k), math.inf, dtype=torch.float64)
        out_i = torch.full((q32.shape[0], k), -1, dtype=torch.int64)
        dim = q32.shape[1]
        # bound of |float32 score - exact score| (inner product of unit vectors,
        # or squared L2 by the expansion FAISS uses), plus float64 slack
        eps = 2.0 * (dim + 4) * _FLOAT32_EPS
        while rows.size:
            scores, cand = self._index.search(q32[rows], fetch)
            sub = q_ops._replace(
                feats=q_ops.feats[rows],
                sq_norms=q_ops.sq_norms[rows] if q_ops.sq_norms.numel() else q_ops.sq_norms,
            )
            dist = self._rescore(sub, cand)
            cand_t = torch.from_numpy(cand)
            # (distance, index) order: sort by index, then stably by distance
            cand_t = torch.where(cand_t >= 0, cand_t, num)
            cand_t, perm = torch.sort(cand_t, dim=1)
            dist = torch.gather(dist, 1, perm)
            dist, perm = torch.sort(dist, dim=1, stable=True)
            cand_t = torch.gather(cand_t, 1, perm)
            cand_t = torch.where(cand_t < num, cand_t, -1)
            width = min(k, dist.shape[1])
            if not exact or fetch >= num:
                done = np.ones(rows.size, dtype=bool)
            else:
                done = self._proven(scores[:, -1], dist[:, width - 1], sub, eps)
            out_d[rows[done], :width] = dist[done, :width]
            out_i[rows[done], :width] = cand_t[done, :width]
            rows = rows[~done]
            fetch = min(num, 2 * fetch)
        return out_d, out_i

    def _proven(self, last_score: np.ndarray, kth: torch.Tensor, q_ops, eps: float) -> np.ndarray:
        """Whether no sample FAISS did not return can come at or before the k-th result."""
        last = torch.from_numpy(last_score.astype(np.float64))
        if self.metric == 'cosine':
            # unseen samples have float32 score <= last, exact score <= last + eps
            return (kth < 1.0 - (last + eps) - 1e-12).numpy()
        # unseen samples have float32 squared distance >= last
        scale = (q_ops.sq_norms.sqrt() + self._max_norm) ** 2
        bound = last - eps * scale - 1e-12 * (1.0 + scale)
        return (kth * kth < bound).numpy()

    # ------------------------------------------------------------------ #
    # Search
    # ------------------------------------------------------------------ #
    def _removal(
        self,
        query_pids: Optional[ArrayLike],
        query_camids: Optional[ArrayLike],
        query_sceneids: Optional[ArrayLike],
        num_query: int,
    ) -> Optional[Tuple[_RemovalGroups, np.ndarray, np.ndarray]]:
        """The groups of the rule and the query keys, or None when nothing is removed."""
        if query_pids is None and query_camids is None and query_sceneids is None:
            return None
        rule = self.rule
        if rule == 'none':
            return None
        if query_pids is None:
            raise ValueError('The removal rule needs query_pids.')
        if self.gallery_pids is None:
            raise ValueError(
                'The removal rule needs the gallery identities: build the searcher with '
                'gallery_pids and gallery_camids (or gallery_sceneids).'
            )
        q_pids = check_ids(query_pids, 'query_pids', num_query)
        if rule == 'scene':
            if self.gallery_sceneids is None:
                raise ValueError(
                    "removal_rule='scene' needs gallery_sceneids: build the searcher with them."
                )
            if query_sceneids is None:
                raise ValueError('The gallery has scene ids: pass query_sceneids too.')
            q_groups = check_ids(query_sceneids, 'query_sceneids', num_query)
            g_groups = self.gallery_sceneids
        else:
            if query_camids is None or self.gallery_camids is None:
                raise ValueError(
                    'The same-id-same-camera rule needs query_camids and gallery_camids '
                    "(removal_rule='none' removes nothing)."
                )
            q_groups = check_ids(query_camids, 'query_camids', num_query)
            g_groups = self.gallery_camids
        if rule not in self._groups:
            self._groups[rule] = _RemovalGroups(self.gallery_pids, g_groups)
        return self._groups[rule], q_pids, q_groups

    def search(
        self,
        query_feats: ArrayLike,
        k: int = 10,
        query_pids: Optional[ArrayLike] = None,
        query_camids: Optional[ArrayLike] = None,
        query_sceneids: Optional[ArrayLike] = None,
    ) -> SearchResult:
        """The ``k`` nearest gallery samples of each query.

        Args:
            query_feats (ArrayLike): ``(Q, D)`` query features.
            k (int): Number of results per query, >= 1. Defaults to 10.
            query_pids (ArrayLike, optional): ``(Q,)`` identities; with
                ``query_camids`` (or ``query_sceneids``) the gallery samples
                the evaluation removes are hidden (unless the rule is
                ``'none'``). Defaults to None (no removal).
            query_camids (ArrayLike, optional): ``(Q,)`` cameras. Defaults to
                None.
            query_sceneids (ArrayLike, optional): ``(Q,)`` scenes (galleries
                with scene ids). Defaults to None.

        Returns:
            SearchResult: ``indices`` and ``distances`` of shape
            ``(Q, min(k, G))`` (padded with ``-1`` / ``inf`` where the removal
            rule leaves fewer samples), and ``meta`` when the searcher has
            gallery metadata.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f'k must be a positive int (results per query), got {k!r}.')
        q = query_feats
        if not isinstance(q, torch.Tensor):
            q = torch.as_tensor(np.asarray(q))
        if q.dim() != 2:
            raise ValueError(f'query_feats must be 2-D (Q, D), got shape {tuple(q.shape)}.')
        if q.shape[1] != self.gallery_feats.shape[1]:
            raise ValueError(
                f'Feature dims differ: query features have dim {q.shape[1]}, gallery features '
                f'have dim {self.gallery_feats.shape[1]}.'
            )
        if not bool(torch.isfinite(q).all()):
            raise ValueError('query_feats contain NaN or infinite values.')
        num_query = q.shape[0]
        k = min(k, self.num_gallery)
        removal = self._removal(query_pids, query_camids, query_sceneids, num_query)
        extra = np.zeros(num_query, dtype=np.int64)
        if removal is not None:
            extra = removal[0].removed_counts(removal[1], removal[2])
        out_i = torch.full((num_query, k), -1, dtype=torch.int64)
        out_d = torch.full((num_query, k), math.inf, dtype=torch.float64)
        chunk = self._chunk_size()
        for start in range(0, num_query, chunk):
            stop = min(start + chunk, num_query)
            need = min(k + int(extra[start:stop].max(initial=0)), self.num_gallery)
            # the first `need` distinct rows (by distance, then first index)
            # hold every sample of the first `need` results
            fetch = min(need, self._distinct.num)
            if self.backend == 'faiss':
                dist, idx = self._faiss_topk(q[start:stop], fetch)
            else:
                dist, idx = self._torch_topk(q[start:stop], fetch)
            dist, idx = self._distinct.expand(dist, idx, need)
            if removal is not None:
                groups, q_pids, q_groups = removal
                hidden = groups.removed(
                    idx,
                    torch.from_numpy(q_pids[start:stop]),
                    torch.from_numpy(q_groups[start:stop]),
                )
                keep = (~hidden) & (idx >= 0)
                # kept entries first, in order (a stable sort of the flags)
                order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
                idx = torch.gather(idx, 1, order).masked_fill_(~torch.gather(keep, 1, order), -1)
                dist = torch.gather(dist, 1, order).masked_fill_(idx < 0, math.inf)
            out_i[start:stop] = idx[:, :k]
            out_d[start:stop] = dist[:, :k]
        meta = None
        if self.gallery_meta is not None:
            meta = [
                [self.gallery_meta[j] if j >= 0 else None for j in row] for row in out_i.tolist()
            ]
        return SearchResult(out_i, out_d, meta)


def search_gallery(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k: int = 10,
    metric: str = 'cosine',
    gallery_meta: Optional[GalleryMeta] = None,
    chunk_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    backend: str = 'torch',
    index: str = 'flat',
    index_options: Optional[Dict[str, Any]] = None,
) -> SearchResult:
    """The ``k`` nearest gallery samples of each query (no removal rule).

    A one-shot form of :class:`GallerySearcher`; use the class to hide the
    samples the benchmark's evaluation removes, or to search one gallery
    many times.

    Args:
        query_feats (ArrayLike): ``(Q, D)`` query features.
        gallery_feats (ArrayLike): ``(G, D)`` gallery features.
        k (int): Results per query (cut to the gallery size). Defaults to 10.
        metric (str): ``'cosine'`` or ``'euclidean'``. Defaults to
            ``'cosine'``.
        gallery_meta (Mapping | Sequence[Mapping], optional): Per-sample
            metadata returned with the results. Defaults to None.
        chunk_size (int, optional): Queries per chunk. Defaults to None.
        device (str | torch.device, optional): Where to compute. Defaults to
            None.
        backend (str): ``'torch'`` or ``'faiss'``. Defaults to ``'torch'``.
        index (str): FAISS index type (see :class:`GallerySearcher`).
            Defaults to ``'flat'``.
        index_options (dict, optional): FAISS index options. Defaults to None.

    Returns:
        SearchResult: ``indices`` (int64) and ``distances`` (float64), both
        ``(Q, min(k, G))``, nearest first, and ``meta``.
    """
    searcher = GallerySearcher(
        gallery_feats,
        metric,
        gallery_meta=gallery_meta,
        chunk_size=chunk_size,
        device=device,
        backend=backend,
        index=index,
        index_options=index_options,
    )
    return searcher.search(query_feats, k)
