"""Floor 4, for users: embeddings of multi-modal samples, gallery search, pictures.

:class:`ReIDGallery` searches a gallery of one's own images (cached features,
exact or FAISS search, threshold decisions); :func:`calibrate_on_features`
calibrates the threshold on held-out identities.

The search and the feature files are defined lower down (``evaluation`` and
``structures``) and re-exported here, so that users find them in one place.
"""

from mmdmpt.engine.hooks.rank_list_hook import write_rank_lists
from mmdmpt.evaluation.functional.search import GallerySearcher, SearchResult, search_gallery
from mmdmpt.evaluation.functional.threshold import (
    calibrate_threshold,
    load_calibration,
    resolve_threshold,
    save_calibration,
)
from mmdmpt.structures import (
    FEATURE_KEYS,
    PER_SAMPLE_KEYS,
    ReIDFeatures,
    load_features,
    removal_rule_name,
    save_features,
    split_query_gallery,
)

from .export import check_onnx_file, export_onnx, onnx_session, parity_rows
from .inference import (
    ReIDInferencer,
    build_reid_model,
    evaluator_options,
    extract_dataset_features,
    load_reid_checkpoint,
)
from .model_zoo import ModelHub, get_model, inference_model, init_model, list_models
from .search import (
    DEFAULT_CACHE_DIR,
    ReIDGallery,
    calibrate_on_features,
    config_modalities,
    file_digest,
    gallery_dataset_cfg,
    gallery_features,
)

__all__ = [
    'ReIDInferencer',
    'build_reid_model',
    'load_reid_checkpoint',
    'extract_dataset_features',
    'evaluator_options',
    'ReIDGallery',
    'DEFAULT_CACHE_DIR',
    'gallery_dataset_cfg',
    'gallery_features',
    'file_digest',
    'calibrate_on_features',
    'config_modalities',
    'calibrate_threshold',
    'load_calibration',
    'save_calibration',
    'resolve_threshold',
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
    'ModelHub',
    'list_models',
    'get_model',
    'init_model',
    'inference_model',
    'export_onnx',
    'check_onnx_file',
    'onnx_session',
    'parity_rows',
]
