from .checkpoint_hook import SafeCheckpointHook, from_safe, to_safe
from .consistency_hook import DataModelCheckHook
from .reseed_hook import ReseedHook

__all__ = ['DataModelCheckHook', 'ReseedHook', 'SafeCheckpointHook', 'from_safe', 'to_safe']
