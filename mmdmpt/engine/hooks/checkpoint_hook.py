"""Checkpoints that load without executing pickled code."""

from collections import OrderedDict
from typing import Any, Union

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper

from mmdmpt.registry import HOOKS
from mmdmpt.utils.errors import ConfigError

_BUFFER_TAG = '__history_buffer__'
_SAFE_SCALARS = (str, int, float, bool, type(None), torch.Tensor, torch.Size)


def to_safe(obj: Any, path: str = 'checkpoint') -> Any:
    """Convert ``obj`` into types that ``torch.load(weights_only=True)`` accepts.

    Tensors, primitives, dicts, lists and tuples pass through; numpy scalars and
    arrays become Python numbers and tensors; MMEngine's ``HistoryBuffer``
    becomes a tagged dict that :func:`from_safe` turns back.

    Args:
        obj: The object to convert.
        path (str): Where ``obj`` sits in the checkpoint, for error messages.
            Defaults to ``'checkpoint'``.

    Returns:
        The converted object.

    Raises:
        TypeError: If ``obj`` holds an object of another type, naming its path.
    """
    # numpy scalars first: np.float64 is a subclass of float, yet it pickles
    # as a numpy object that the safe loader refuses.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, _SAFE_SCALARS):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, HistoryBuffer):
        log_history, count_history = obj.data
        return {
            _BUFFER_TAG: True,
            'log_history': torch.from_numpy(np.asarray(log_history, dtype=np.float64)),
            'count_history': torch.from_numpy(np.asarray(count_history, dtype=np.float64)),
            'max_length': int(obj.max_length),
        }
    if isinstance(obj, dict):
        items = [(k, to_safe(v, f'{path}.{k}')) for k, v in obj.items()]
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple)):
        converted = [to_safe(v, f'{path}[{i}]') for i, v in enumerate(obj)]
        return converted if isinstance(obj, list) else tuple(converted)
    raise TypeError(
        f'{path} holds a {type(obj).__module__}.{type(obj).__qualname__}, which a '
        'checkpoint loaded with torch.load(weights_only=True) cannot contain; '
        'store it as tensors or primitive values.'
    )


def from_safe(obj: Any) -> Any:
    """Undo :func:`to_safe` for the tagged ``HistoryBuffer`` dicts."""
    if isinstance(obj, dict):
        if obj.get(_BUFFER_TAG) is True:
            return HistoryBuffer(
                obj['log_history'].tolist(),
                obj['count_history'].tolist(),
                obj['max_length'],
            )
        items = [(k, from_safe(v)) for k, v in obj.items()]
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, list):
        return [from_safe(v) for v in obj]
    return obj


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Write checkpoints that load with ``torch.load(weights_only=True)``.

    PyTorch >= 2.6 refuses to unpickle arbitrary objects by default, and MMEngine
    checkpoints carry ``HistoryBuffer`` objects and numpy values in the message
    hub and meta data. This hook stores those as tensors and primitive values
    before saving and restores them after loading, so resuming, ``load_from``
    and ``tools/test.py`` all work without turning the safety check off.

    It also records the model's ``num_classes`` and ``modalities`` in the
    checkpoint's ``meta`` (read by ``num_classes='auto'`` when testing).

    Args:
        trainable_only (bool | str): Store only the trainable tensors of the
            model (plus the buffers of the modules that own them, e.g. BNNeck
            statistics), so that a checkpoint is a few MB on top of the shared
            pretrained weights; the model must provide
            ``trainable_state_dict()``. ``'auto'``: trainable-only when the
            backbone is frozen (``backbone.frozen``) and read from a weight
            file (``backbone.pretrained``): DMPT; everything otherwise (full
            fine-tuning, or a frozen tower with random weights that no file
            holds). Resuming is exact either way: the frozen tensors come
            from the pretrained file. Defaults to ``'auto'``.
    """

    priority = 'VERY_LOW'

    def __init__(self, trainable_only: Union[bool, str] = 'auto') -> None:
        if trainable_only not in (True, False, 'auto'):
            raise ConfigError(
                f'SafeCheckpointHook: trainable_only={trainable_only!r}; expected True, False '
                "or 'auto'."
            )
        self.trainable_only = trainable_only

    @staticmethod
    def _frozen_part_has_a_file(model) -> bool:
        """Whether the backbone is frozen (``frozen=True``) and read from a weight file."""
        backbone = getattr(model, 'backbone', None)
        return (
            hasattr(model, 'trainable_state_dict')
            and bool(getattr(backbone, 'frozen', False))
            and getattr(backbone, 'pretrained', None) is not None
        )

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Make ``checkpoint`` safe to load (and trainable-only when chosen)."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        meta = checkpoint.setdefault('meta', {})
        head = getattr(model, 'head', None)
        if isinstance(getattr(head, 'num_classes', None), int):
            meta['num_classes'] = int(head.num_classes)
        modalities = getattr(getattr(model, 'backbone', None), 'modalities', None)
        if modalities is not None:
            meta['modalities'] = [str(m) for m in modalities]
        trainable_only = self.trainable_only
        if trainable_only == 'auto':
            trainable_only = self._frozen_part_has_a_file(model)
        if trainable_only:
            if not hasattr(model, 'trainable_state_dict'):
                raise TypeError(
                    f'SafeCheckpointHook(trainable_only=True) needs a model with '
                    f'trainable_state_dict(); {type(model).__name__} has none.'
                )
            keep = set(model.trainable_state_dict().keys())
            state = checkpoint['state_dict']
            checkpoint['state_dict'] = OrderedDict((k, v) for k, v in state.items() if k in keep)
            checkpoint.setdefault('meta', {})['trainable_only'] = True
        for key in list(checkpoint):
            checkpoint[key] = to_safe(checkpoint[key], key)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the objects that :meth:`before_save_checkpoint` converted."""
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = from_safe(checkpoint['message_hub'])
