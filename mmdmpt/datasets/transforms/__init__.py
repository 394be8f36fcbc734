from .formatting import PackMultiModalReIDInputs
from .loading import LoadMultiModalImages, decode_bgr
from .processing import ReIDRandomCrop, ReIDRandomErasing

__all__ = [
    'LoadMultiModalImages',
    'PackMultiModalReIDInputs',
    'ReIDRandomCrop',
    'ReIDRandomErasing',
    'decode_bgr',
]
