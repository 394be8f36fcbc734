from .fast_block import (
    fallback_counts,
    fast_block_forward,
    fast_path_supported,
    visual_embeds,
    visual_embeds_from_attributes,
)

__all__ = [
    'fallback_counts',
    'fast_block_forward',
    'fast_path_supported',
    'visual_embeds',
    'visual_embeds_from_attributes',
]
