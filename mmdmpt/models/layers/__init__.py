from .fast_block import (
    BlockWeights,
    attention,
    block_tail,
    block_weights,
    compute_dtype_of,
    embed_tokens,
    fallback_counts,
    fast_block_forward,
    fast_path_supported,
    layer_norm,
    visual_embeds,
    visual_embeds_from_attributes,
)

__all__ = [
    'BlockWeights',
    'attention',
    'block_tail',
    'block_weights',
    'compute_dtype_of',
    'embed_tokens',
    'fallback_counts',
    'fast_block_forward',
    'fast_path_supported',
    'layer_norm',
    'visual_embeds',
    'visual_embeds_from_attributes',
]
