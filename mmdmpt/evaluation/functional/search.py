"""Top-k gallery search with the benchmarks' removal rule.

Built on :func:`mmdmpt.evaluation.functional.search_topk`, so distances and
ties (stable: equal distances keep gallery order) are exactly those of the
evaluation.
"""

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from mmdmpt.utils.errors import ConfigError

from ._utils import check_ids, check_metric
from .distance import search_topk

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]
GalleryMeta = Union[Mapping[str, Sequence], Sequence[Mapping[str, Any]]]

__all__ = ['SearchResult', 'GallerySearcher', 'search_gallery']


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


class GallerySearcher:
    """Search a fixed gallery for the nearest samples of queries.

    When gallery identities and cameras (or scenes) are given, a query can
    hide the samples that the benchmark's evaluation removes from its
    ranking: those with the query's identity and the query's camera -- or,
    with scene ids (MSVR310), the query's identity and scene, whatever the
    camera. The remaining ranking is exactly the one the metric scores.

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
            the rule is same id and same scene. Defaults to None.
        chunk_size (int, optional): Queries per distance chunk. Defaults to
            None (about 256 MiB of working memory per chunk).
        device (str | torch.device, optional): Where to compute. Defaults to
            None (the device of the features; CPU for NumPy).

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
    ) -> None:
        try:
            self.metric = check_metric(metric)
        except ValueError as exc:
            raise ConfigError(f'GallerySearcher: {exc}') from None
        feats = gallery_feats
        if not isinstance(feats, torch.Tensor):
            feats = torch.as_tensor(np.asarray(feats))
        if feats.dim() != 2 or feats.shape[0] == 0:
            raise ValueError(
                f'gallery_feats must be a non-empty (G, D) array, got shape {tuple(feats.shape)}.'
            )
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

    @property
    def num_gallery(self) -> int:
        """int: Number of gallery samples."""
        return int(self.gallery_feats.shape[0])

    @property
    def use_scenes(self) -> bool:
        """bool: Whether the removal rule compares scenes instead of cameras."""
        return self.gallery_sceneids is not None

    def _removed(
        self,
        query_pids: Optional[ArrayLike],
        query_camids: Optional[ArrayLike],
        query_sceneids: Optional[ArrayLike],
        num_query: int,
    ) -> Optional[np.ndarray]:
        """``(Q, G)`` bool mask of the gallery samples each query removes."""
        if query_pids is None and query_camids is None and query_sceneids is None:
            return None
        if query_pids is None:
            raise ValueError('The removal rule needs query_pids.')
        if self.gallery_pids is None:
            raise ValueError(
                'The removal rule needs the gallery identities: build the searcher with '
                'gallery_pids and gallery_camids (or gallery_sceneids).'
            )
        q_pids = check_ids(query_pids, 'query_pids', num_query)
        if self.use_scenes:
            if query_sceneids is None:
                raise ValueError('The gallery has scene ids: pass query_sceneids too.')
            q_groups = check_ids(query_sceneids, 'query_sceneids', num_query)
            g_groups = self.gallery_sceneids
        else:
            if query_camids is None or self.gallery_camids is None:
                raise ValueError(
                    'The same-id-same-camera rule needs query_camids and gallery_camids.'
                )
            q_groups = check_ids(query_camids, 'query_camids', num_query)
            g_groups = self.gallery_camids
        return (q_pids[:, None] == self.gallery_pids[None, :]) & (
            q_groups[:, None] == g_groups[None, :]
        )

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
                the evaluation removes are hidden. Defaults to None (no
                removal).
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
        num_query = q.shape[0]
        k = min(k, self.num_gallery)
        removed = self._removed(query_pids, query_camids, query_sceneids, num_query)
        extra = int(removed.sum(axis=1).max()) if removed is not None and num_query else 0
        dists, idx = search_topk(
            q,
            self.gallery_feats,
            min(k + extra, self.num_gallery),
            metric=self.metric,
            chunk_size=self.chunk_size,
            device=self.device,
        )
        dists, idx = dists.cpu(), idx.cpu()
        if removed is not None:
            keep = ~torch.from_numpy(removed).gather(1, idx)
            out_idx = torch.full((num_query, k), -1, dtype=torch.int64)
            out_dist = torch.full((num_query, k), float('inf'), dtype=torch.float64)
            for i in range(num_query):
                kept_idx = idx[i][keep[i]][:k]
                out_idx[i, : kept_idx.numel()] = kept_idx
                out_dist[i, : kept_idx.numel()] = dists[i][keep[i]][:k]
            idx, dists = out_idx, out_dist
        else:
            idx, dists = idx[:, :k], dists[:, :k]
        meta = None
        if self.gallery_meta is not None:
            meta = [[self.gallery_meta[j] if j >= 0 else None for j in row] for row in idx.tolist()]
        return SearchResult(idx, dists, meta)


def search_gallery(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k: int = 10,
    metric: str = 'cosine',
    gallery_meta: Optional[GalleryMeta] = None,
    chunk_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> SearchResult:
    """The ``k`` nearest gallery samples of each query (no removal rule).

    A one-shot form of :class:`GallerySearcher`; use the class to hide the
    samples the benchmark's evaluation removes.

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

    Returns:
        SearchResult: ``indices`` (int64) and ``distances`` (float64), both
        ``(Q, min(k, G))``, nearest first, and ``meta``.
    """
    searcher = GallerySearcher(
        gallery_feats, metric, gallery_meta=gallery_meta, chunk_size=chunk_size, device=device
    )
    return searcher.search(query_feats, k)
