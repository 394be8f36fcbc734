from .deep_prompts import DeepPrompts
from .modality_prompts import ModalityPromptGenerator

__all__ = ['DeepPrompts', 'ModalityPromptGenerator']
