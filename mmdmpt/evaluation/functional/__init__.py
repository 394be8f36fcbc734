"""Pure ReID evaluation math (NumPy/PyTorch, no MMEngine machinery)."""

from .distance import auto_chunk_size, compute_distance, search_topk, stable_topk
from .rank import evaluate_distmat, evaluate_features, evaluate_rank
from .rerank import DEFAULT_MAX_SAMPLES, re_ranking, re_ranking_from_features
from .search import (
    BACKENDS,
    INDEX_TYPES,
    GallerySearcher,
    SearchResult,
    search_gallery,
)
from .threshold import (
    CALIBRATION_KEYS,
    calibrate_threshold,
    load_calibration,
    pair_distances,
    resolve_threshold,
    roc_points,
    save_calibration,
)

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
    'BACKENDS',
    'INDEX_TYPES',
    'GallerySearcher',
    'SearchResult',
    'search_gallery',
    'stable_topk',
    'CALIBRATION_KEYS',
    'pair_distances',
    'calibrate_threshold',
    'roc_points',
    'save_calibration',
    'load_calibration',
    'resolve_threshold',
]
