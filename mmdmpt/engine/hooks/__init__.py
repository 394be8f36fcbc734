from .checkpoint_hook import SafeCheckpointHook, from_safe, to_safe
from .consistency_hook import DataModelCheckHook
from .rank_list_hook import RankListHook, write_rank_lists
from .reseed_hook import ReseedHook

__all__ = [
    'DataModelCheckHook',
    'RankListHook',
    'ReseedHook',
    'SafeCheckpointHook',
    'from_safe',
    'to_safe',
    'write_rank_lists',
]
