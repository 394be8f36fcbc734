"""Rank-list pictures and training curves."""

from .curves import (
    DEFAULT_METRIC_KEYS,
    ScalarKeyError,
    collect_curves,
    find_scalars_file,
    load_scalars,
    plot_curves,
)
from .rank_list import (
    MATCH_COLOR,
    MISMATCH_COLOR,
    QUERY_COLOR,
    UNJUDGED_COLOR,
    RankListLayout,
    draw_rank_list,
    rank_list_layout,
    save_image,
    select_queries,
)
from .visualizer import ReIDVisualizer

__all__ = [
    'ReIDVisualizer',
    'draw_rank_list',
    'rank_list_layout',
    'RankListLayout',
    'select_queries',
    'save_image',
    'MATCH_COLOR',
    'MISMATCH_COLOR',
    'QUERY_COLOR',
    'UNJUDGED_COLOR',
    'find_scalars_file',
    'load_scalars',
    'collect_curves',
    'plot_curves',
    'DEFAULT_METRIC_KEYS',
    'ScalarKeyError',
]
