"""mmdmpt: Decoupled Modality-aware Prompt Tuning for multi-modal ReID.

Importing the package is cheap: the versions of its OpenMMLab dependencies
are checked from the installed distributions' metadata, without importing
them (so that a tool's ``--help`` answers at once); the subpackages import
torch, mmengine, mmcv and mmpretrain when they are used.
"""

import importlib.metadata as _metadata
from typing import Optional, Tuple

from .version import __version__, version_info

#: name: (distributions providing it, minimum inclusive, maximum exclusive).
_REQUIREMENTS = {
    'mmengine': (('mmengine',), '0.10.0', '1.0.0'),
    'mmcv': (('mmcv', 'mmcv-lite'), '2.0.0', '2.3.0'),
    'mmpretrain': (('mmpretrain',), '1.2.0', '2.0.0'),
}


def _numeric(version: str) -> Tuple[int, ...]:
    """The leading numeric release of a version string: '2.2.0rc1' -> (2, 2, 0)."""
    parts = []
    for part in version.split('.'):
        digits = ''
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _installed(dists: Tuple[str, ...]) -> Optional[str]:
    for dist in dists:
        try:
            return _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            continue
    return None


def _check_versions() -> None:
    for name, (dists, low, high) in _REQUIREMENTS.items():
        version = _installed(dists)
        hint = (
            f'`pip install "{name}>={low},<{high}"`'
            + (' (mmcv-lite is enough)' if name == 'mmcv' else '')
            + ', or run `make test`, which builds a .venv from requirements/constraints.txt.'
        )
        if version is None:
            raise ImportError(f'mmdmpt needs {name}>={low},<{high}, which is not installed: {hint}')
        if not _numeric(low) <= _numeric(version) < _numeric(high):
            raise ImportError(
                f'mmdmpt needs {name}>={low},<{high} but {name}=={version} is installed: {hint}'
            )


_check_versions()

#: Subpackages reached as attributes (``mmdmpt.apis.list_models()``) without
#: an explicit import; they are imported on first use.
_SUBPACKAGES = (
    'apis',
    'datasets',
    'engine',
    'evaluation',
    'models',
    'structures',
    'testing',
    'utils',
    'visualization',
)


def __getattr__(name: str):
    """Import a subpackage on first use, so that ``import mmdmpt`` stays cheap."""
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['__version__', 'version_info']
