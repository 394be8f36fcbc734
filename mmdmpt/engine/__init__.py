from .hooks import *  # noqa: F401,F403
from .loops import ReIDTestLoop, format_table, parse_missing
from .runner import ReIDRunner

__all__ = ['ReIDRunner', 'ReIDTestLoop', 'format_table', 'parse_missing']
