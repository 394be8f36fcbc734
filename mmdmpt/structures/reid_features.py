"""The per-sample test record, and the features of a split built from it.

Every place that gathers test outputs -- :class:`~mmdmpt.evaluation.ReIDMetric`,
the rank-list hook, :func:`mmdmpt.apis.extract_dataset_features` -- turns
each data sample into one record with :func:`sample_record`, and records
into :class:`ReIDFeatures` with :meth:`ReIDFeatures.from_records` (which
drops the duplicates a distributed sampler pads with, by ``sample_idx``).

A :class:`ReIDFeatures` is a *features dict* (a ``dict`` subclass) describing
the samples of one dataset split in dataset order; it is also what
``tools/analysis_tools/extract_features.py`` writes:

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
``removal_rule``        optional str: ``'camera'``, ``'scene'`` or ``'none'``
                        (the dataset's rule; without it, ``has_scenes``
                        decides between scene and camera)
======================  ===============================================

``.pt`` files hold only tensors, strings, numbers and lists (they load with
``torch.load(weights_only=True)``); ``.npz`` files hold plain arrays (they
load with ``numpy.load(allow_pickle=False)``).

The removal rule of the evaluation protocol (which gallery samples a query
does not rank) is named here too (:func:`removal_rule_name`), for the
metric's log line and the rank-list legend alike.
"""

import logging
import os.path as osp
import pickle
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from zipfile import BadZipFile

import numpy as np
import torch
from mmengine.logging import print_log

from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError
from mmdmpt.utils.io import atomic_write_path

from .modalities import MODALITIES

__all__ = [
    'FEATURE_KEYS',
    'PER_SAMPLE_KEYS',
    'REMOVAL_RULES',
    'ReIDFeatures',
    'check_feature_path',
    'deduplicate_records',
    'load_features',
    'removal_rule_name',
    'sample_record',
    'save_features',
    'split_query_gallery',
    'to_int',
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
    if features.get('removal_rule') is not None:
        data['removal_rule'] = str(features['removal_rule'])
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
            elif key in ('dataset_name', 'removal_rule'):
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


# --------------------------------------------------------------------------
# The removal rule
# --------------------------------------------------------------------------
#: Which gallery samples a query does not rank: those with its identity and
#: its camera (the benchmarks' default), its identity and its scene (MSVR310),
#: or none (data without cameras).
REMOVAL_RULES = ('camera', 'scene', 'none')
_RULE_WORDS = {
    'camera': 'same id and same camera',
    'scene': 'same id and same scene',
    'none': 'no removal rule (nothing hidden)',
}


def removal_rule_name(rule: Union[str, bool]) -> str:
    """The removal rule in words, e.g. ``'same id and same camera'``.

    Args:
        rule (str | bool): One of :data:`REMOVAL_RULES`, or a bool meaning
            "uses scenes" (True -> ``'scene'``, False -> ``'camera'``).

    Returns:
        str: The wording used in logs and pictures.
    """
    if isinstance(rule, bool):
        rule = 'scene' if rule else 'camera'
    if rule not in _RULE_WORDS:
        raise ConfigError(f'removal_rule={rule!r}; expected one of {REMOVAL_RULES}')
    return _RULE_WORDS[rule]


# --------------------------------------------------------------------------
# One record per sample
# --------------------------------------------------------------------------
def to_int(value: Any, key: str, default: Optional[int] = None) -> int:
    """An int from an int, a one-element tensor / array, a NumPy scalar or a bool.

    Args:
        value: The value (None gives ``default``).
        key (str): Its name, for messages.
        default (int, optional): Returned for None; None makes None an
            error. Defaults to None.

    Returns:
        int: The value.

    Raises:
        ValueError: On an array of more than one value.
        TypeError: On a value that is not an integer.
    """
    if value is None:
        if default is None:
            raise TypeError(f'{key} is missing')
        return int(default)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        numel = value.size if isinstance(value, np.ndarray) else value.numel()
        if numel != 1:
            raise ValueError(f'{key} must hold one value, got shape {tuple(value.shape)}.')
        value = value.reshape(-1)[0].item()
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)):
        raise TypeError(f'{key} must be an integer, got {value!r}.')
    return int(value)


#: Data-sample fields a test record needs.
REQUIRED_SAMPLE_KEYS = ('pred_feature', 'gt_label', 'camid', 'is_query')


def sample_record(sample: Any) -> Dict[str, Any]:
    """The test record of one data sample (as the model's ``predict`` returns it).

    Args:
        sample (BaseDataElement | Mapping): A data sample or its ``to_dict()``
            with ``pred_feature``, ``gt_label``, ``camid``, ``is_query`` and
            optionally ``sceneid``, ``sample_idx``, ``modality_mask``,
            ``img_paths``.

    Returns:
        dict: ``feature`` (float32 CPU ``(D,)``), ``pid``, ``camid``,
        ``sceneid`` (-1 when absent), ``is_query``, ``sample_idx`` (-1 when
        absent), ``modality_mask`` (bool tensor or None) and ``img_paths``.

    Raises:
        TypeError: If ``sample`` is neither a data sample nor a dict.
        KeyError: If a required field is missing.
    """
    if hasattr(sample, 'to_dict') and not isinstance(sample, Mapping):
        sample = sample.to_dict()
    if not isinstance(sample, Mapping):
        raise TypeError(f'expected a data sample or a dict, got {type(sample).__name__}.')
    missing = [k for k in REQUIRED_SAMPLE_KEYS if k not in sample]
    if missing:
        raise KeyError(f'each test sample needs {missing} (present: {sorted(sample)}).')
    feature = torch.as_tensor(sample['pred_feature'])
    mask = sample.get('modality_mask')
    return dict(
        feature=feature.detach().to(device='cpu', dtype=torch.float32).reshape(-1).clone(),
        pid=to_int(sample['gt_label'], 'gt_label'),
        camid=to_int(sample['camid'], 'camid'),
        sceneid=to_int(sample.get('sceneid'), 'sceneid', -1),
        is_query=bool(to_int(sample['is_query'], 'is_query')),
        sample_idx=to_int(sample.get('sample_idx'), 'sample_idx', -1),
        modality_mask=None
        if mask is None
        else torch.as_tensor(mask, dtype=torch.bool).reshape(-1).cpu().clone(),
        img_paths=['' if p is None else str(p) for p in sample.get('img_paths') or []],
    )


def deduplicate_records(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Drop repeated ``sample_idx`` (keep the first) and sort by it.

    Distributed samplers pad the last batch with repeated samples; records
    gathered from all ranks therefore contain duplicates. When some records
    have no ``sample_idx`` (``-1``), nothing is removed (with a warning).

    Args:
        records (Sequence[dict]): Records of :func:`sample_record`.

    Returns:
        list[dict]: The unique records in dataset order.
    """
    records = list(records)
    with_idx = sum(r['sample_idx'] >= 0 for r in records)
    if with_idx == 0:
        return records
    if with_idx < len(records):
        print_log(
            f'{len(records) - with_idx} of {len(records)} test samples have no sample_idx; '
            'duplicates are not removed.',
            logger='current',
            level=logging.WARNING,
        )
        return records
    unique: Dict[int, Dict[str, Any]] = {}
    for r in records:
        unique.setdefault(r['sample_idx'], r)
    return [unique[k] for k in sorted(unique)]


class ReIDFeatures(dict):
    """The features of one split: a features dict (see the module docstring) with methods.

    Build it with :meth:`from_records`, read it with :meth:`load`; as a
    ``dict`` it is what the rest of the API takes.
    """

    @classmethod
    def from_records(
        cls,
        records: Iterable[Dict[str, Any]],
        modalities: Optional[Sequence[str]] = None,
        *,
        normalized: bool = False,
        missing: Sequence[str] = (),
        dataset_name: str = '',
        deduplicate: bool = True,
        removal_rule: Optional[str] = None,
    ) -> 'ReIDFeatures':
        """Stack records of :func:`sample_record` into features.

        Args:
            records (Iterable[dict]): The records (e.g. gathered from all ranks).
            modalities (Sequence[str], optional): The modality order. Defaults
                to None: the first names of :data:`MODALITIES`, as many as
                the masks have.
            normalized (bool): Whether the features are L2-normalised.
                Defaults to False.
            missing (Sequence[str]): Modalities left out. Defaults to ``()``.
            dataset_name (str): Defaults to ``''``.
            deduplicate (bool): Drop repeated ``sample_idx``. Defaults to True.
            removal_rule (str, optional): The dataset's removal rule (one of
                :data:`REMOVAL_RULES`). Defaults to None (scene or camera, by
                ``has_scenes``).

        Returns:
            ReIDFeatures: The features, in dataset order when deduplicated.
        """
        rows = deduplicate_records(records) if deduplicate else list(records)
        if not rows:
            raise DataError('no test samples to gather: the split is empty.')
        num_mod = None
        for r in rows:
            if r['modality_mask'] is not None:
                num_mod = int(r['modality_mask'].numel())
                break
        if modalities is None:
            modalities = MODALITIES[: num_mod or len(MODALITIES)]
        num_mod = len(modalities)
        sceneids = torch.tensor([r['sceneid'] for r in rows], dtype=torch.int64)
        sample_idx = [r['sample_idx'] if r['sample_idx'] >= 0 else i for i, r in enumerate(rows)]
        extra = {}
        if removal_rule is not None:
            removal_rule_name(removal_rule)  # validates
            extra['removal_rule'] = str(removal_rule)
        return cls(
            **extra,
            feats=torch.stack([r['feature'] for r in rows]),
            pids=torch.tensor([r['pid'] for r in rows], dtype=torch.int64),
            camids=torch.tensor([r['camid'] for r in rows], dtype=torch.int64),
            sceneids=sceneids,
            is_query=torch.tensor([r['is_query'] for r in rows], dtype=torch.bool),
            sample_idx=torch.tensor(sample_idx, dtype=torch.int64),
            modality_mask=torch.stack(
                [
                    r['modality_mask']
                    if r['modality_mask'] is not None
                    else torch.ones(num_mod, dtype=torch.bool)
                    for r in rows
                ]
            ),
            img_paths=[list(r['img_paths']) for r in rows],
            modalities=[str(m) for m in modalities],
            has_scenes=bool((sceneids >= 0).all()),
            normalized=bool(normalized),
            missing=[str(m) for m in missing],
            dataset_name=str(dataset_name or ''),
        )

    @property
    def num_samples(self) -> int:
        """int: The number of samples."""
        return int(self['feats'].shape[0])

    @property
    def removal_rule(self) -> str:
        """str: The recorded rule, else ``'scene'`` with scene ids, else ``'camera'``."""
        if self.get('removal_rule') is not None:
            return str(self['removal_rule'])
        return 'scene' if self['has_scenes'] else 'camera'

    def split(self) -> Tuple['ReIDFeatures', 'ReIDFeatures']:
        """The query and the gallery part (see :func:`split_query_gallery`)."""
        query, gallery = split_query_gallery(self)
        return type(self)(query), type(self)(gallery)

    def save(self, path: str) -> None:
        """Write to ``.pt`` or ``.npz`` (see :func:`save_features`)."""
        save_features(self, path)

    @classmethod
    def load(cls, path: str) -> 'ReIDFeatures':
        """Read a file written by :meth:`save` (see :func:`load_features`)."""
        return cls(load_features(path))
