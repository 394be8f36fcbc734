"""The one reader of mmdmpt checkpoints, and the strict loading of their tensors.

Every loader of the project -- ``tools/test.py``, ``load_from``, ``--resume``
(all through :class:`~mmdmpt.engine.ReIDRunner`), the inferencer, feature
extraction and search (:mod:`mmdmpt.apis`) -- reads files with
:func:`read_checkpoint` and loads weights with :func:`load_model_weights`, so
they accept and refuse the same files:

* a file that is not a PyTorch checkpoint (text, truncated, empty) is refused
  at once by :func:`check_checkpoint_file`, before anything is built;
* a file whose unpickling would run code is refused
  (``torch.load(weights_only=True)``);
* tensors must fit the model: a shape mismatch, a missing *trainable* tensor
  or an unexpected tensor is an error naming the first keys (and both
  shapes). Missing *frozen* tensors are fine when the model was built with
  its pretrained weights (trainable-only checkpoints); they are an error
  when it was not (the frozen weights would be random). When testing, the ID
  classifier may differ (the metric does not use it): it is skipped with one
  log line.

When the config the checkpoint was trained with (``meta['cfg']``, written by
MMEngine) disagrees with the current one on a model setting, the errors say
which, and a successful load warns about it.
"""

import logging
import os.path as osp
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import nn

from .errors import CheckpointError

__all__ = [
    'check_checkpoint_file',
    'read_checkpoint',
    'checkpoint_state_dict',
    'config_differences',
    'load_model_weights',
]

#: How many keys an error message lists.
_SHOW = 5


def _not_a_checkpoint(path: str, why: str) -> CheckpointError:
    return CheckpointError(
        f'`{path}` is not a PyTorch checkpoint ({why}). Expected a file written by '
        'torch.save, e.g. work_dirs/<config>/epoch_N.pth; check the path.'
    )


def check_checkpoint_file(path: str) -> None:
    """Fail at once unless ``path`` looks like a whole ``torch.save`` file.

    Cheap: the tensors are not read. A zip archive (``torch.save``'s format
    since PyTorch 1.6) must have a readable directory (a truncated file has
    none) and a ``data.pkl`` record; a file that is not a zip archive must
    start like a pickle (PyTorch's legacy format).

    Args:
        path (str): The checkpoint file.

    Raises:
        CheckpointError: ``"`<path>` is not a PyTorch checkpoint (...)"``, or
            ``checkpoint file not found`` when it does not exist.
    """
    path = str(path)
    if not osp.exists(path):
        raise CheckpointError(f'checkpoint file not found: `{path}`; check the path.')
    if not osp.isfile(path):
        raise _not_a_checkpoint(path, 'it is a directory, not a file')
    size = osp.getsize(path)
    if size == 0:
        raise _not_a_checkpoint(path, 'the file is empty')
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise _not_a_checkpoint(path, f'unreadable zip archive: {exc}') from None
        if not any(name.endswith('data.pkl') for name in names):
            raise _not_a_checkpoint(path, 'a zip archive without the data.pkl of torch.save')
        return
    with open(path, 'rb') as f:
        head = f.read(2)
    if head[:1] != b'\x80':
        if head[:2] == b'PK':
            why = 'a truncated or damaged zip archive'
        else:
            why = 'neither a torch.save zip archive nor a pickle'
        raise _not_a_checkpoint(path, why)


def _is_unsafe_pickle_error(exc: BaseException) -> bool:
    if isinstance(exc, pickle.UnpicklingError):
        text = str(exc)
        return 'weights_only' in text or 'Weights only load failed' in text or 'global' in text
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        'weights_only' in text or 'Weights only load failed' in text
    )


def read_checkpoint(path: str, map_location: Any = 'cpu', mmap: bool = False) -> Dict[str, Any]:
    """Read a checkpoint without ever executing pickled code.

    Args:
        path (str): A local checkpoint file.
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
        mmap (bool): Map the tensors from the file instead of reading them
            (cheap when only the meta data are needed; zip archives only).
            Defaults to False.

    Returns:
        dict: The checkpoint (a plain ``dict``; a bare state dict stays as it
        is).

    Raises:
        CheckpointError: If the file is missing, is not a PyTorch checkpoint,
            holds objects whose unpickling would run code, or does not hold a
            dict.
    """
    path = str(path)
    check_checkpoint_file(path)
    try:
        checkpoint = torch.load(
            path,
            map_location=map_location,
            weights_only=True,
            mmap=mmap and zipfile.is_zipfile(path),
        )
    except (pickle.UnpicklingError, RuntimeError) as exc:
        if not _is_unsafe_pickle_error(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _not_a_checkpoint(path, first) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f'Refused to load checkpoint `{path}`: loading it would execute pickled code '
            f'(torch.load(weights_only=True) rejected it: {first}). mmdmpt checkpoints hold '
            'only tensors and primitive values (SafeCheckpointHook); only load files you '
            'trust, re-saved as plain state dicts.'
        ) from None
    except (EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise _not_a_checkpoint(path, f'{type(exc).__name__}: {exc}') from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f'`{path}` holds a {type(checkpoint).__name__}, not a checkpoint dict (expected '
            'a dict with "state_dict", or a state dict).'
        )
    return dict(checkpoint)


def checkpoint_state_dict(
    checkpoint: Mapping, path: str = 'checkpoint', revise_keys: Sequence[Tuple[str, str]] = ()
) -> 'OrderedDict[str, torch.Tensor]':
    """The state dict of a checkpoint, ``module.`` prefixes removed.

    Args:
        checkpoint (Mapping): A checkpoint (with ``state_dict``) or a bare
            state dict.
        path (str): The file, for messages. Defaults to ``'checkpoint'``.
        revise_keys (Sequence[tuple]): Extra ``(regex, replacement)`` pairs
            applied to the keys. Defaults to ``()``.

    Returns:
        OrderedDict[str, Tensor]: The tensors by key.
    """
    import re

    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f'`{path}`: "state_dict" is a {type(state).__name__}, not a dict of tensors'
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        key = str(key)
        if key.startswith('module.'):
            key = key[len('module.') :]
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f'`{path}`: the state dict holds non-tensor values at {bad[:_SHOW]}; expected '
            'tensors only.'
        )
    return out


def _flatten(obj: Any, prefix: str) -> Dict[str, Any]:
    if isinstance(obj, Mapping):
        out: Dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f'{prefix}.{key}' if prefix else str(key)))
        return out
    if isinstance(obj, (list, tuple)):
        return {prefix: tuple(_flatten(v, '').get('', v) for v in obj)}
    return {prefix: obj}


#: Model settings that may differ between training and testing on purpose.
_IGNORED_MODEL_KEYS = ('pretrained', 'init_cfg', 'with_cp')


def config_differences(checkpoint: Mapping, model_cfg: Optional[Mapping]) -> List[str]:
    """Model settings on which the checkpoint's training config and ``model_cfg`` differ.

    Args:
        checkpoint (Mapping): A checkpoint; its ``meta['cfg']`` (the config
            text MMEngine stores) is read when present.
        model_cfg (Mapping, optional): The current ``cfg.model``.

    Returns:
        list[str]: Lines like ``model.backbone.num_modality_prompts: checkpoint
        4, config 2`` (empty when unknown or equal). Paths and the
        weight-file setting ``pretrained`` are not compared.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    text = meta.get('cfg') if isinstance(meta, Mapping) else None
    if not isinstance(text, str) or model_cfg is None:
        return []
    try:
        from mmengine.config import Config

        stored = Config.fromstring(text, file_format='.py').get('model')
    except Exception:  # an unreadable stored config is only a missed hint
        return []
    if not isinstance(stored, Mapping):
        return []
    old = _flatten(stored.to_dict() if hasattr(stored, 'to_dict') else stored, 'model')
    new_cfg = model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else model_cfg
    new = _flatten(new_cfg, 'model')
    lines = []
    for key in sorted(set(old) | set(new)):
        if key.rsplit('.', 1)[-1] in _IGNORED_MODEL_KEYS:
            continue
        a, b = old.get(key, '<unset>'), new.get(key, '<unset>')
        if a != b:
            lines.append(f'{key}: checkpoint {a!r}, config {b!r}')
    return lines


def _trainable_keys(model: nn.Module) -> Set[str]:
    if hasattr(model, 'trainable_keys'):
        return set(model.trainable_keys())
    return set(model.state_dict())


def _classifier_keys(model: nn.Module) -> Set[str]:
    head = getattr(model, 'head', None)
    if head is None or not hasattr(head, 'classifier_parameters'):
        return set()
    ids = {id(p) for p in head.classifier_parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def _frozen_source(model: nn.Module) -> Optional[str]:
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        return None
    return getattr(backbone, 'pretrained', None)


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f' and {len(keys) - _SHOW} more' if len(keys) > _SHOW else ''
    return ', '.join(keys[:_SHOW]) + more


def load_model_weights(
    model: nn.Module,
    checkpoint: Mapping,
    path: str = 'checkpoint',
    *,
    model_cfg: Optional[Mapping] = None,
    for_test: bool = False,
    revise_keys: Sequence[Tuple[str, str]] = (),
    logger: Union[str, logging.Logger] = 'current',
) -> Dict[str, Any]:
    """Load a checkpoint's tensors into ``model``, refusing any that do not fit.

    Args:
        model (nn.Module): The model (unwrapped). ``trainable_keys()`` tells
            trainable from frozen entries when it has it; otherwise every
            entry is required.
        checkpoint (Mapping): A checkpoint or a bare state dict.
        path (str): The file, for messages. Defaults to ``'checkpoint'``.
        model_cfg (Mapping, optional): The current ``cfg.model``, to name the
            settings that differ from the checkpoint's training config.
            Defaults to None.
        for_test (bool): Tolerate a different or absent ID classifier (one
            log line); for testing only. Defaults to False.
        revise_keys (Sequence[tuple]): Extra ``(regex, replacement)`` key
            renames. Defaults to ``()``.
        logger (str | logging.Logger): Where to log. Defaults to
            ``'current'``.

    Returns:
        dict: ``trainable_only`` (frozen entries came from the model),
        ``num_loaded``, ``skipped`` (classifier keys not loaded) and
        ``differences`` (config lines, see :func:`config_differences`).

    Raises:
        CheckpointError: On shape mismatches, missing trainable or frozen
            entries that nothing else provides, or unexpected entries.
    """
    state = checkpoint_state_dict(checkpoint, path, revise_keys)
    own = model.state_dict()
    trainable = _trainable_keys(model)
    tolerated = _classifier_keys(model) if for_test else set()
    differences = config_differences(checkpoint, model_cfg)

    def fail(problem: str, fix: str) -> CheckpointError:
        lines = [f'`{path}` does not fit the model: {problem}.']
        if differences:
            lines.append('The config it was trained with differs from this one:')
            lines += [f'  {line}' for line in differences[:10]]
        lines.append(fix)
        return CheckpointError('\n'.join(lines))

    mismatched = [
        k
        for k, v in state.items()
        if k in own and k not in tolerated and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        shown = '; '.join(
            f'{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}'
            for k in sorted(mismatched)[:_SHOW]
        )
        raise fail(
            f'{len(mismatched)} tensor(s) differ in shape ({shown})',
            'Use the config the checkpoint was trained with (or its --cfg-options).',
        )
    unexpected = [k for k in state if k not in own and k not in tolerated]
    if unexpected:
        raise fail(
            f'{len(unexpected)} unexpected tensor(s) the model does not have '
            f'({_listed(unexpected)})',
            'Use the config the checkpoint was trained with.',
        )
    missing = [k for k in own if k not in state and k not in tolerated]
    missing_trainable = [k for k in missing if k in trainable]
    if missing_trainable:
        raise fail(
            f'{len(missing_trainable)} trained tensor(s) are missing '
            f'({_listed(missing_trainable)})',
            'A checkpoint must hold every trained tensor (prompts, mappings, head); it may be '
            'damaged or come from another model.',
        )
    missing_frozen = [k for k in missing if k not in trainable]
    if missing_frozen and _frozen_source(model) is None:
        raise fail(
            f'it lacks {len(missing_frozen)} frozen tensor(s) (e.g. {sorted(missing_frozen)[0]}) '
            'and model.backbone.pretrained is None, so they would stay random',
            'This is a trainable-only checkpoint: set model.backbone.pretrained to the CLIP '
            'weight file used in training (e.g. --cfg-options '
            'model.backbone.pretrained=checkpoints/ViT-B-16.pt).',
        )
    to_load = OrderedDict((k, v) for k, v in state.items() if k in own and k not in tolerated)
    classifier_fits = all(
        k in state and tuple(state[k].shape) == tuple(own[k].shape) for k in tolerated
    )
    skipped: List[str] = []
    if classifier_fits:
        to_load.update((k, state[k]) for k in tolerated)
    else:
        skipped = sorted(tolerated)
        first = skipped[0]
        found = f'{tuple(state[first].shape)}' if first in state else 'none'
        print_log(
            f'The ID classifier was not loaded ({first}: checkpoint {found}, model '
            f'{tuple(own[first].shape)}); testing does not use it.',
            logger=logger,
        )
    result = model.load_state_dict(to_load, strict=False)
    left = [k for k in result.missing_keys if k not in tolerated and k not in missing_frozen]
    if left or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise fail(f'missing {left[:_SHOW]}, unexpected {result.unexpected_keys[:_SHOW]}', '')
    if missing_frozen:
        print_log(
            f'`{path}` holds the trained tensors only; the {len(missing_frozen)} frozen ones come '
            f'from {_frozen_source(model)}.',
            logger=logger,
        )
    if differences:
        print_log(
            'The checkpoint was trained with other model settings (they do not change any '
            'tensor shape):\n  ' + '\n  '.join(differences[:10]),
            logger=logger,
            level=logging.WARNING,
        )
    return dict(
        trainable_only=bool(missing_frozen),
        num_loaded=len(to_load),
        skipped=skipped,
        differences=differences,
    )
