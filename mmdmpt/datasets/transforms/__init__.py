from .formatting import PackMultiModalReIDInputs
from .loading import (
    LoadMultiModalImages,
    decode_bgr,
    load_sample_images,
    set_missing_in_pipeline,
)
from .processing import ReIDRandomCrop, ReIDRandomErasing

__all__ = [
    'LoadMultiModalImages',
    'PackMultiModalReIDInputs',
    'ReIDRandomCrop',
    'ReIDRandomErasing',
    'decode_bgr',
    'load_sample_images',
    'set_missing_in_pipeline',
]
