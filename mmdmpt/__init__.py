"""mmdmpt: Decoupled Modality-aware Prompt Tuning for multi-modal ReID."""

import mmcv
import mmengine
from mmengine.utils import digit_version

from .version import __version__, version_info

_REQUIREMENTS = {
    # name: (module, minimum inclusive, maximum exclusive)
    'mmengine': (mmengine, '0.10.0', '1.0.0'),
    'mmcv': (mmcv, '2.0.0', '2.3.0'),
}


def _check_versions() -> None:
    for name, (module, low, high) in _REQUIREMENTS.items():
        version = digit_version(module.__version__)
        if not digit_version(low) <= version < digit_version(high):
            raise ImportError(
                f'mmdmpt needs {name}>={low},<{high} but {name}=='
                f'{module.__version__} is installed. Install a matching '
                f'version, e.g. `pip install "{name}>={low},<{high}"` '
                '(mmcv-lite is enough for mmcv), or run `make test`, which '
                'builds a .venv from requirements/constraints.txt.'
            )
    try:
        import mmpretrain
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            'mmdmpt needs mmpretrain>=1.2.0,<2.0.0: `pip install "mmpretrain>=1.2.0,<2.0.0"`'
        ) from exc
    version = digit_version(mmpretrain.__version__)
    if not digit_version('1.2.0') <= version < digit_version('2.0.0'):
        raise ImportError(
            f'mmdmpt needs mmpretrain>=1.2.0,<2.0.0 but mmpretrain=='
            f'{mmpretrain.__version__} is installed: '
            '`pip install "mmpretrain>=1.2.0,<2.0.0"`.'
        )


_check_versions()

__all__ = ['__version__', 'version_info']
