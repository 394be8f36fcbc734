from .dmpt_clip_vit import DMPTCLIPViT

__all__ = ['DMPTCLIPViT']
