from .checkpoint_hook import SafeCheckpointHook, from_safe, to_safe

__all__ = ['SafeCheckpointHook', 'from_safe', 'to_safe']
