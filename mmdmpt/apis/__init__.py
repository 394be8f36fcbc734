"""Inference: embeddings of multi-modal samples and gallery search."""

from .features import (
    FEATURE_KEYS,
    PER_SAMPLE_KEYS,
    load_features,
    save_features,
    split_query_gallery,
)
from .inference import (
    ReIDInferencer,
    build_reid_model,
    extract_dataset_features,
    load_reid_checkpoint,
)
from .search import GallerySearcher, SearchResult, removal_rule_name, search_gallery

__all__ = [
    'ReIDInferencer',
    'build_reid_model',
    'load_reid_checkpoint',
    'extract_dataset_features',
    'GallerySearcher',
    'SearchResult',
    'search_gallery',
    'removal_rule_name',
    'FEATURE_KEYS',
    'PER_SAMPLE_KEYS',
    'save_features',
    'load_features',
    'split_query_gallery',
]
