from .clip_builder import (
    build_clip,
    extract_modality_knowledge,
    load_into_clip,
    resolve_clip_config,
)
from .clip_weights import (
    ACCEPTED_FORMATS,
    CLIPWeightsError,
    is_openai_layout,
    load_clip_weights,
    resize_visual_pos_embed,
    resolve_quick_gelu,
)
from .misc import autocast_off, count_parameters, release_free_memory

__all__ = [
    'ACCEPTED_FORMATS',
    'CLIPWeightsError',
    'autocast_off',
    'build_clip',
    'count_parameters',
    'extract_modality_knowledge',
    'is_openai_layout',
    'load_clip_weights',
    'load_into_clip',
    'release_free_memory',
    'resize_visual_pos_embed',
    'resolve_clip_config',
    'resolve_quick_gelu',
]
