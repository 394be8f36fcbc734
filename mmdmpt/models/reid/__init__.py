from .multimodal_reid import MultiModalReID

__all__ = ['MultiModalReID']
