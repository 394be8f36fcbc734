"""Helpers for tests, demos and benchmarks (as ``mmengine.testing``).

Floor 1: imports :mod:`mmdmpt.utils` only (plus NumPy, OpenCV and MMEngine),
never the runtime packages it helps test.
"""

from .scripts import load_script
from .synthetic import (
    CUSTOM_LAYOUTS,
    LAYOUTS,
    WMVEID863_LAYOUTS,
    make_custom_synthetic,
    make_synthetic,
)

__all__ = [
    'CUSTOM_LAYOUTS',
    'LAYOUTS',
    'WMVEID863_LAYOUTS',
    'load_script',
    'make_custom_synthetic',
    'make_synthetic',
]
