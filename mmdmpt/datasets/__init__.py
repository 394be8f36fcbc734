from mmdmpt.structures import MODALITIES

from .base import BaseMultiModalReIDDataset
from .folder import MultiModalReIDFolder
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
    load_sample_images,
    set_missing_in_pipeline,
)
from .verify import BadFile, SplitReport, VerifyReport, default_num_workers, verify_dataset
from .wmveid863 import WMVeID863

__all__ = [
    'MODALITIES',
    'BaseMultiModalReIDDataset',
    'RGBNT201',
    'RGBNT100',
    'MSVR310',
    'WMVeID863',
    'MultiModalReIDFolder',
    'verify_dataset',
    'VerifyReport',
    'SplitReport',
    'BadFile',
    'default_num_workers',
    'IdentitySampler',
    'LoadMultiModalImages',
    'load_sample_images',
    'set_missing_in_pipeline',
    'PackMultiModalReIDInputs',
    'ReIDRandomCrop',
    'ReIDRandomErasing',
]
