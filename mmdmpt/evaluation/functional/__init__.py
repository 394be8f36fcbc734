"""Pure ReID evaluation math (NumPy/PyTorch, no MMEngine)."""

from .distance import auto_chunk_size, compute_distance, search_topk
from .rank import evaluate_distmat, evaluate_features, evaluate_rank
from .rerank import DEFAULT_MAX_SAMPLES, re_ranking, re_ranking_from_features
from .search import GallerySearcher, SearchResult, search_gallery

__all__ = [
    'compute_distance',
    'search_topk',
    'auto_chunk_size',
    'evaluate_rank',
    'evaluate_distmat',
    'evaluate_features',
    're_ranking',
    're_ranking_from_features',
    'DEFAULT_MAX_SAMPLES',
    'GallerySearcher',
    'SearchResult',
    'search_gallery',
]
