"""Values a config states once and the Runner derives everywhere else.

A config names its data once, at the top level::

    dataset_type = 'RGBNT201'
    data_root = 'data/RGBNT201/'
    modalities = ('rgb', 'nir', 'tir')

and its dataloaders' datasets leave ``type``, ``data_root`` and
``modalities`` out: they take them from these variables
(:func:`fill_data_settings`), unless a dataloader sets its own; the backbone
and the data preprocessor take ``modalities`` the same way. So a leaf config
switches to another benchmark or folder by changing the variables, and
``--data-root`` (:func:`set_data_root`) moves every split at once.

The ID classifier's size may be ``num_classes='auto'``
(:func:`resolve_num_classes`): the number of identities of the training set,
read when the Runner is built, or -- when testing, without a training set --
the size recorded in the checkpoint.

:func:`prepare_config` applies all of it and the key checks of
:mod:`mmdmpt.engine.config_check`; :class:`~mmdmpt.engine.ReIDRunner` calls it
in ``from_cfg``, before anything is built or written.
"""

import copy
from collections.abc import Mapping
from typing import Any, Optional

from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from mmdmpt.utils.errors import ConfigError

from .config_check import check_config_keys

__all__ = [
    'DATALOADERS',
    'fill_data_settings',
    'set_data_root',
    'resolve_num_classes',
    'prepare_config',
]

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: dataset key -> the config variable it comes from.
_DATA_VARIABLES = (
    ('type', 'dataset_type'),
    ('data_root', 'data_root'),
    ('modalities', 'modalities'),
)


def _datasets(cfg: Mapping):
    for name in DATALOADERS:
        loader = cfg.get(name)
        if isinstance(loader, Mapping) and isinstance(loader.get('dataset'), Mapping):
            yield name, loader['dataset']


def fill_data_settings(cfg: Mapping) -> None:
    """Give the datasets and the model the values the config states once.

    Each dataloader's dataset takes ``type`` / ``data_root`` / ``modalities``
    from the config's ``dataset_type`` / ``data_root`` / ``modalities``; the
    backbone (``model.backbone.modalities``) and the data preprocessor take
    ``modalities``. Whatever sets its own value keeps it. Idempotent.

    Args:
        cfg (Mapping): The config, changed in place.
    """
    for _, dataset in _datasets(cfg):
        for key, variable in _DATA_VARIABLES:
            value = cfg.get(variable)
            if key not in dataset and value is not None:
                dataset[key] = value
    modalities = cfg.get('modalities')
    if modalities is None:
        return
    model = cfg.get('model')
    targets = []
    if isinstance(model, Mapping):
        targets += [model.get('backbone'), model.get('data_preprocessor')]
    targets.append(cfg.get('data_preprocessor'))
    for target in targets:
        if isinstance(target, Mapping) and 'modalities' not in target:
            target['modalities'] = modalities


def set_data_root(cfg: Mapping, data_root: str) -> None:
    """Point every split at ``data_root`` (``--data-root``).

    Sets the config's ``data_root`` and every dataloader's dataset
    ``data_root``, including ones that set their own.

    Args:
        cfg (Mapping): The config, changed in place.
        data_root (str): The dataset root.
    """
    cfg['data_root'] = data_root
    for _, dataset in _datasets(cfg):
        dataset['data_root'] = data_root


def _head(cfg: Mapping) -> Optional[dict]:
    model = cfg.get('model')
    head = model.get('head') if isinstance(model, Mapping) else None
    return head if isinstance(head, Mapping) else None


def _num_classes_of_checkpoint(checkpoint: Mapping) -> Optional[int]:
    meta = checkpoint.get('meta')
    if isinstance(meta, Mapping) and isinstance(meta.get('num_classes'), int):
        return int(meta['num_classes'])
    state = checkpoint.get('state_dict', checkpoint)
    if isinstance(state, Mapping):
        for key in ('head.classifier.weight', 'module.head.classifier.weight'):
            weight = state.get(key)
            if weight is not None and getattr(weight, 'dim', lambda: 0)() == 2:
                return int(weight.shape[0])
    return None


def _num_ids_of_training_set(cfg: Mapping) -> int:
    from mmdmpt.registry import DATASETS

    dataset_cfg = copy.deepcopy(dict(cfg['train_dataloader']['dataset']))
    dataset_cfg['pipeline'] = []
    dataset_cfg.pop('lazy_init', None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmdmpt'):
        dataset = DATASETS.build(dataset_cfg)
    num_ids = dataset.metainfo.get('num_ids')
    if not isinstance(num_ids, int) or num_ids < 1:
        raise ConfigError(
            "model.head.num_classes='auto': the training set "
            f'({dataset_cfg.get("type")}) does not report its number of identities '
            '(metainfo num_ids); set model.head.num_classes to a number.'
        )
    return num_ids


def resolve_num_classes(cfg: Mapping, checkpoint: Optional[Mapping] = None) -> Optional[int]:
    """Replace ``model.head.num_classes='auto'`` by the number of training ids.

    With a training dataloader, its dataset is listed (no image is read) and
    its ``num_ids`` is taken. Without one (testing), the size recorded in
    ``checkpoint`` (``meta['num_classes']``, or the classifier's rows) is
    taken; the metric does not use the classifier.

    Args:
        cfg (Mapping): The config, changed in place.
        checkpoint (Mapping, optional): The checkpoint to test. Defaults to
            None.

    Returns:
        int | None: The resolved size, or None when it was not ``'auto'``.

    Raises:
        ConfigError: When neither source is available.
    """
    head = _head(cfg)
    if head is None or head.get('num_classes') != 'auto':
        return None
    if isinstance(cfg.get('train_dataloader'), Mapping):
        num = _num_ids_of_training_set(cfg)
        source = 'the training set'
    else:
        num = _num_classes_of_checkpoint(checkpoint) if checkpoint is not None else None
        source = 'the checkpoint'
        if num is None:
            raise ConfigError(
                "model.head.num_classes='auto' is read from the training set, and this run has "
                'none (testing) nor a checkpoint that records it; set model.head.num_classes.'
            )
    head['num_classes'] = num
    print_log(f"model.head.num_classes='auto' -> {num} (from {source}).", logger='current')
    return num


def prepare_config(cfg: Any, checkpoint: Optional[Mapping] = None) -> Any:
    """Derive the stated-once values and check the keys (see the module docstring).

    Args:
        cfg (Config | dict): The config, changed in place.
        checkpoint (Mapping, optional): The checkpoint of a test run (for
            ``num_classes='auto'``). Defaults to None.

    Returns:
        The same config.

    Raises:
        ConfigError: On a misspelled key or an unresolvable value.
    """
    fill_data_settings(cfg)
    check_config_keys(cfg)
    resolve_num_classes(cfg, checkpoint)
    head = _head(cfg)
    if head is not None and isinstance(head.get('num_classes'), str):
        raise ConfigError(
            f"model.head.num_classes={head['num_classes']!r}: expected a number or 'auto'."
        )
    return cfg
