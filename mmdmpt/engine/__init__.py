from .hooks import *  # noqa: F401,F403
from .loops import ReIDTestLoop, format_table
from .optim_wrappers import AmpNonFiniteCheckOptimWrapper, NonFiniteCheckOptimWrapper
from .runner import ReIDRunner

__all__ = [
    'AmpNonFiniteCheckOptimWrapper',
    'NonFiniteCheckOptimWrapper',
    'ReIDRunner',
    'ReIDTestLoop',
    'format_table',
]
