from .base import MODALITIES, BaseMultiModalReIDDataset
from .msvr310 import MSVR310
from .rgbnt100 import RGBNT100
from .rgbnt201 import RGBNT201
from .samplers import *  # noqa: F401,F403
from .samplers import IdentitySampler
from .transforms import *  # noqa: F401,F403
from .transforms import (
    LoadMultiModalImages,
    PackMultiModalReIDInputs,
    ReIDRandomCrop,
    ReIDRandomErasing,
)
from .wmveid863 import WMVeID863

__all__ = [
    'MODALITIES',
    'BaseMultiModalReIDDataset',
    'RGBNT201',
    'RGBNT100',
    'MSVR310',
    'WMVeID863',
    'IdentitySampler',
    'LoadMultiModalImages',
    'PackMultiModalReIDInputs',
    'ReIDRandomCrop',
    'ReIDRandomErasing',
]
