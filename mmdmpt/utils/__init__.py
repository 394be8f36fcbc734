"""Floor-1 helpers shared by every package of mmdmpt.

Importing this package stays light (no torch, NumPy or MMEngine), so that the
tools' ``--help`` answers at once: the names of :mod:`mmdmpt.utils.seeding`
are exported lazily, imported on first access.
"""

import importlib
from typing import Any

from .io import atomic_write_path

#: Exported names of the heavier modules (torch, NumPy), imported on first use.
_LAZY = {
    'SAMPLE_TAG': 'seeding',
    'SeededIndex': 'seeding',
    'derive_seed': 'seeding',
    'derive_seeds': 'seeding',
    'seed_global_rngs': 'seeding',
    'seeded_rngs': 'seeding',
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'{__name__}.{module}'), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ['atomic_write_path', *_LAZY]
