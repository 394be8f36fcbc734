"""Feature files: what ``tools/analysis_tools/extract_features.py`` writes.

A *features dict* describes the samples of one dataset split in dataset
order (see :func:`mmdmpt.apis.extract_dataset_features`):

======================  ===============================================
key                     value
======================  ===============================================
``feats``               float32 tensor ``(N, M*D)``
``pids``                int64 tensor ``(N,)``, identities
``camids``              int64 tensor ``(N,)``, 0-based cameras
``sceneids``            int64 tensor ``(N,)``, scenes (``-1`` when none)
``is_query``            bool tensor ``(N,)``
``sample_idx``          int64 tensor ``(N,)``, index in the dataset
``modality_mask``       bool tensor ``(N, M)``, False for absent modalities
``img_paths``           ``list[list[str]]``, one path per modality
``modalities``          ``list[str]``, the modality order
``has_scenes``          bool: every sample has a scene id (MSVR310), so the
                        removal rule is same id and same scene
``normalized``          bool: ``feats`` are L2-normalised
``missing``             ``list[str]``, modalities left out at extraction
``dataset_name``        str (``''`` when unknown)
======================  ===============================================

``.pt`` files hold only tensors, strings, numbers and lists (they load with
``torch.load(weights_only=True)``); ``.npz`` files hold plain arrays (they
load with ``numpy.load(allow_pickle=False)``).
"""

import os.path as osp
import pickle
from typing import Any, Dict, Tuple
from zipfile import BadZipFile

import numpy as np
import torch

from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError
from mmdmpt.utils.io import atomic_write_path

__all__ = [
    'FEATURE_KEYS',
    'PER_SAMPLE_KEYS',
    'check_feature_path',
    'save_features',
    'load_features',
    'split_query_gallery',
]

#: Keys holding one entry per sample.
PER_SAMPLE_KEYS = (
    'feats',
    'pids',
    'camids',
    'sceneids',
    'is_query',
    'sample_idx',
    'modality_mask',
    'img_paths',
)
#: Keys of a features dict: the per-sample ones, then the ones about the whole set.
FEATURE_KEYS = PER_SAMPLE_KEYS + (
    'modalities',
    'has_scenes',
    'normalized',
    'missing',
    'dataset_name',
)
_INT_KEYS = ('pids', 'camids', 'sceneids', 'sample_idx')
_BOOL_KEYS = ('is_query', 'modality_mask')
_FLAG_KEYS = ('has_scenes', 'normalized')


def _check(features: Dict[str, Any]) -> None:
    missing = [k for k in FEATURE_KEYS if k not in features]
    if missing:
        raise KeyError(f'features dict lacks {missing}; expected keys {list(FEATURE_KEYS)}')
    num = int(features['feats'].shape[0])
    for key in PER_SAMPLE_KEYS:
        if len(features[key]) != num:
            raise ValueError(f'features[{key!r}] has {len(features[key])} entries, expected {num}')


def _ext(path: str) -> str:
    ext = osp.splitext(str(path))[1].lower()
    if ext not in ('.pt', '.pth', '.npz'):
        raise ConfigError(f'feature file {path}: use a .pt (or .pth) or .npz file name')
    return ext


def check_feature_path(path: str) -> None:
    """Refuse an output path :func:`save_features` cannot write, before any work.

    Args:
        path (str): The feature file to write.

    Raises:
        ConfigError: If the name does not end in ``.pt``, ``.pth`` or
            ``.npz``, the path is a folder, or a file stands where its
            folder should be.
    """
    _ext(path)
    if osp.isdir(path):
        raise ConfigError(f'feature file {path} is a folder; expected a file name, e.g. feats.pt')
    folder = osp.dirname(osp.abspath(path))
    while folder and not osp.exists(folder):
        folder = osp.dirname(folder)
    if folder and not osp.isdir(folder):
        raise ConfigError(
            f'feature file {path}: {folder} is a file, not a folder; choose another path'
        )


def save_features(features: Dict[str, Any], path: str) -> None:
    """Write a features dict to ``.pt`` (``torch.save``) or ``.npz``.

    The file is written atomically (a temporary file renamed at the end).

    Args:
        features (dict): A features dict (see the module docstring).
        path (str): Output file ending in ``.pt``, ``.pth`` or ``.npz``.
    """
    _check(features)
    ext = _ext(path)
    data = {
        'feats': torch.as_tensor(features['feats']).detach().float().cpu().contiguous(),
        'img_paths': [['' if p is None else str(p) for p in ps] for ps in features['img_paths']],
        'modalities': [str(m) for m in features['modalities']],
        'has_scenes': bool(features['has_scenes']),
        'normalized': bool(features['normalized']),
        'missing': [str(m) for m in features['missing']],
        'dataset_name': str(features['dataset_name'] or ''),
    }
    for key in _INT_KEYS:
        data[key] = torch.as_tensor(features[key]).to(torch.int64).cpu()
    for key in _BOOL_KEYS:
        data[key] = torch.as_tensor(features[key]).to(torch.bool).cpu()
    with atomic_write_path(str(path)) as tmp:
        if ext == '.npz':
            arrays = {}
            for key, value in data.items():
                if isinstance(value, torch.Tensor):
                    arrays[key] = value.numpy()
                elif key == 'img_paths':
                    num_mod = len(data['modalities'])
                    arrays[key] = np.array(value, dtype=str).reshape(len(value), num_mod)
                else:
                    arrays[key] = np.array(value, dtype=str if isinstance(value, list) else None)
            with open(tmp, 'wb') as f:
                np.savez(f, **arrays)
        else:
            torch.save(data, tmp)


def load_features(path: str) -> Dict[str, Any]:
    """Read a file written by :func:`save_features`.

    Args:
        path (str): A ``.pt``/``.pth`` or ``.npz`` feature file.

    Returns:
        dict: The features dict, with tensors for the array entries.

    Raises:
        DataNotFoundError: If ``path`` does not exist (a
            ``FileNotFoundError``).
        ConfigError: If the name does not end in ``.pt``, ``.pth`` or ``.npz``.
        DataError: If the file cannot be read or is not a feature file (it
            lacks a key of the format, or its entries disagree in length).
    """
    if not osp.isfile(path):
        raise DataNotFoundError(
            f'feature file not found: {path}; write one with '
            'tools/analysis_tools/extract_features.py CONFIG CHECKPOINT --out FILE'
        )
    ext = _ext(path)
    try:
        out = _read_features(path, ext)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        raise DataError(
            f'cannot read the feature file {path} ({type(exc).__name__}: {first}); expected a '
            'file written by tools/analysis_tools/extract_features.py'
        ) from None
    if not isinstance(out, dict):
        raise DataError(
            f'{path} holds a {type(out).__name__}, not a features dict; expected a file '
            'written by tools/analysis_tools/extract_features.py'
        )
    try:
        _check(out)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise DataError(
            f'{path} is not a feature file of tools/analysis_tools/extract_features.py: {message}'
        ) from None
    return out


def _read_features(path: str, ext: str) -> Any:
    """The raw content of a feature file (not checked)."""
    if ext == '.npz':
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
        out: Dict[str, Any] = {}
        for key, value in raw.items():
            if key == 'img_paths':
                out[key] = [list(map(str, row)) for row in value]
            elif key in ('modalities', 'missing'):
                out[key] = [str(v) for v in value.reshape(-1)]
            elif key in _FLAG_KEYS:
                out[key] = bool(value)
            elif key == 'dataset_name':
                out[key] = str(value)
            else:
                out[key] = torch.from_numpy(np.ascontiguousarray(value))
    else:
        out = torch.load(path, map_location='cpu', weights_only=True)
    return out


def split_query_gallery(features: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a features dict into its query and gallery parts.

    Args:
        features (dict): A features dict.

    Returns:
        tuple[dict, dict]: Query and gallery dicts with the per-sample keys
        restricted to the part (the other keys are shared).
    """
    _check(features)
    is_query = torch.as_tensor(features['is_query']).bool()
    parts = []
    for mask in (is_query, ~is_query):
        rows = mask.nonzero().flatten().tolist()
        part = {k: v for k, v in features.items() if k not in PER_SAMPLE_KEYS}
        for key in PER_SAMPLE_KEYS:
            value = features[key]
            if isinstance(value, torch.Tensor):
                part[key] = value[mask]
            else:
                part[key] = [value[i] for i in rows]
        parts.append(part)
    return parts[0], parts[1]
