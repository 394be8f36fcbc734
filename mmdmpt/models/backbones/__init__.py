from .dmpt_clip_vit import DEFAULT_MODALITY_WORDS, DMPTCLIPViT, fast_block_forward

__all__ = ['DEFAULT_MODALITY_WORDS', 'DMPTCLIPViT', 'fast_block_forward']
