from .hooks import *  # noqa: F401,F403
from .loops import ReIDTestLoop, format_table, parse_missing

__all__ = ['ReIDTestLoop', 'format_table', 'parse_missing']
