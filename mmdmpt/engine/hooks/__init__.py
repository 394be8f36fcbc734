from .checkpoint_hook import SafeCheckpointHook, from_safe, to_safe
from .consistency_hook import DataModelCheckHook

__all__ = ['DataModelCheckHook', 'SafeCheckpointHook', 'from_safe', 'to_safe']
