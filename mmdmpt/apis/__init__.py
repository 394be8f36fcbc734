"""Floor 4, for users: embeddings of multi-modal samples, gallery search, pictures.

The search and the feature files are defined lower down (``evaluation`` and
``structures``) and re-exported here, so that users find them in one place.
"""

from mmdmpt.engine.hooks.rank_list_hook import write_rank_lists
from mmdmpt.evaluation.functional.search import GallerySearcher, SearchResult, search_gallery
from mmdmpt.structures import (
    FEATURE_KEYS,
    PER_SAMPLE_KEYS,
    ReIDFeatures,
    load_features,
    removal_rule_name,
    save_features,
    split_query_gallery,
)

from .inference import (
    ReIDInferencer,
    build_reid_model,
    extract_dataset_features,
    load_reid_checkpoint,
)

__all__ = [
    'ReIDInferencer',
    'build_reid_model',
    'load_reid_checkpoint',
    'extract_dataset_features',
    'GallerySearcher',
    'SearchResult',
    'search_gallery',
    'removal_rule_name',
    'ReIDFeatures',
    'FEATURE_KEYS',
    'PER_SAMPLE_KEYS',
    'save_features',
    'load_features',
    'split_query_gallery',
    'write_rank_lists',
]
