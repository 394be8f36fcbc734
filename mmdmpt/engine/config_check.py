"""Early checks of a config's keys: misspellings fail before anything is built.

Two checks, both raising :class:`~mmdmpt.utils.errors.ConfigError` with the
closest valid name:

* :func:`check_cfg_options`: a ``--cfg-options`` key must name something
  that exists in the config, or a new argument of a typed dict (whose
  ``type`` then decides, below); ``optim_wraper.optimizer.lr=0.1`` would
  otherwise train silently at the config's lr.
* :func:`check_config_keys`: every dict with a ``type`` in the sections the
  Runner builds (model, datasets, pipelines, samplers, hooks, metrics,
  optimizer, schedulers, loops, visualizer) may only hold arguments its class
  accepts: ``model.backbone.num_promts`` names ``DMPTCLIPViT``, the bad key
  and ``num_modality_prompts``. Classes that take ``**kwargs`` all the way up
  their bases are not checked.
"""

import difflib
import inspect
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set

from mmdmpt.registry import (
    DATA_SAMPLERS,
    DATASETS,
    HOOKS,
    LOOPS,
    METRICS,
    MODELS,
    OPTIM_WRAPPERS,
    OPTIMIZERS,
    PARAM_SCHEDULERS,
    TRANSFORMS,
    VISBACKENDS,
    VISUALIZERS,
)
from mmdmpt.utils.errors import ConfigError

__all__ = ['TEST_SECTIONS', 'check_cfg_options', 'check_config_keys', 'check_sections', 'closest']

#: The config sections a test-time tool builds.
TEST_SECTIONS = ('model', 'data_preprocessor', 'test_dataloader', 'test_evaluator')
#: Keys the builders consume themselves, besides the constructor's arguments.
_BUILDER_KEYS = {'type', '_scope_'}
_SCHEDULER_KEYS = {'convert_to_iter_based'}
_OPTIM_WRAPPER_KEYS = {'constructor', 'paramwise_cfg', 'optimizer'}
#: Top-level keys a config may gain from the command line: the Runner's
#: arguments and the values the tools and configs read.
_TOP_LEVEL_EXTRA = {
    'runner_type',
    'launcher',
    'find_unused_parameters',
    'gpu_ids',
    'dataset_type',
    'data_root',
    'modalities',
}
#: Loop configs: typed or not, their new keys are checked against the loop class.
_LOOP_CONFIGS = ('train_cfg', 'val_cfg', 'test_cfg')
#: DataLoader arguments (torch) and MMEngine's additions.
_DATALOADER_KEYS = {
    'dataset',
    'batch_size',
    'shuffle',
    'sampler',
    'batch_sampler',
    'num_workers',
    'collate_fn',
    'pin_memory',
    'drop_last',
    'timeout',
    'worker_init_fn',
    'multiprocessing_context',
    'generator',
    'prefetch_factor',
    'persistent_workers',
    'pin_memory_device',
    'in_order',
    'num_batch_per_epoch',
}


def closest(name: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate most like ``name`` (difflib), or None when none is close."""
    found = difflib.get_close_matches(str(name), sorted(set(candidates)), n=1, cutoff=0.5)
    return found[0] if found else None


def _suggestion(name: str, candidates: Iterable[str]) -> str:
    best = closest(name, candidates)
    return f'; did you mean {best!r}?' if best else ''


def _accepted_arguments(cls: Any) -> Optional[Set[str]]:
    """Keyword arguments ``cls(...)`` accepts; None when it takes ``**kwargs``."""
    if not inspect.isclass(cls):
        return None
    names: Set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        var_keyword = False
        for param in params:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                var_keyword = True
            elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                names.add(param.name)
        if not var_keyword:
            return names - {'self'}
        if klass is object:
            break
    return None


def _resolve(registry, type_: Any, path: str) -> Any:
    if not isinstance(type_, str):
        return type_
    try:
        cls = registry.get(type_)
    except Exception:  # a broken import is reported when the Runner builds it
        return None
    if cls is None:
        names = list(registry.module_dict)
        parent = getattr(registry, 'parent', None)
        if parent is not None:
            names += list(parent.module_dict)
        raise ConfigError(
            f'{path}.type={type_!r}: no such {registry.name} is registered'
            f'{_suggestion(type_, names)} (registry "{registry.name}", scope mmdmpt; types of '
            "other packages need their scope, e.g. 'mmpretrain.LabelSmoothLoss')."
        )
    return cls


def _check_typed(
    cfg: Mapping, path: str, registry, extra: Iterable[str] = (), recurse_models: bool = False
) -> None:
    """Check one dict with a ``type`` (and, for models, its typed sub-dicts)."""
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        return
    cls = _resolve(registry, cfg['type'], path)
    accepted = _accepted_arguments(cls)
    if accepted is not None:
        allowed = accepted | _BUILDER_KEYS | set(extra)
        for key in cfg:
            if key not in allowed:
                raise ConfigError(
                    f'{path}.{key}: {cls.__name__} has no argument {key!r}'
                    f'{_suggestion(key, accepted)} (its arguments: '
                    f'{", ".join(sorted(accepted))}).'
                )
    if recurse_models:
        for key, value in cfg.items():
            if isinstance(value, Mapping) and 'type' in value:
                _check_typed(value, f'{path}.{key}', MODELS, recurse_models=True)


#: MMEngine's loop when a loop config has no ``type``.
_DEFAULT_LOOPS = dict(val_cfg='ValLoop', test_cfg='TestLoop')
#: Runner-supplied loop arguments (not config keys).
_LOOP_RUNTIME = {'runner', 'dataloader', 'evaluator'}


def _check_loop(cfg: Any, name: str) -> None:
    """Check ``train_cfg`` / ``val_cfg`` / ``test_cfg``, typed or MMEngine's default loop."""
    if not isinstance(cfg, Mapping):
        return
    if 'type' in cfg:
        _check_typed(cfg, name, LOOPS, extra=_LOOP_RUNTIME)
        return
    if name == 'train_cfg':
        default = 'EpochBasedTrainLoop' if cfg.get('by_epoch', True) else 'IterBasedTrainLoop'
    else:
        default = _DEFAULT_LOOPS.get(name)
    if default is None:
        return
    _check_typed(dict(cfg, type=default), name, LOOPS, extra={'by_epoch'} | _LOOP_RUNTIME)


def _check_pipeline(pipeline: Any, path: str) -> None:
    if not isinstance(pipeline, Sequence) or isinstance(pipeline, str):
        return
    for i, transform in enumerate(pipeline):
        where = f'{path}[{i}]'
        _check_typed(transform, where, TRANSFORMS)
        if isinstance(transform, Mapping):
            inner = transform.get('transforms')
            if isinstance(inner, Mapping):
                inner = [inner]
            _check_pipeline(inner, f'{where}.transforms')


def _check_dataloader(loader: Any, name: str) -> None:
    if not isinstance(loader, Mapping):
        return
    for key in loader:
        if key not in _DATALOADER_KEYS:
            raise ConfigError(
                f'{name}.{key}: a dataloader has no setting {key!r}'
                f'{_suggestion(key, _DATALOADER_KEYS)}.'
            )
    dataset = loader.get('dataset')
    _check_typed(dataset, f'{name}.dataset', DATASETS)
    if isinstance(dataset, Mapping):
        _check_pipeline(dataset.get('pipeline'), f'{name}.dataset.pipeline')
    _check_typed(loader.get('sampler'), f'{name}.sampler', DATA_SAMPLERS)


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


def check_config_keys(cfg: Mapping) -> None:
    """Refuse arguments that the class of a typed dict does not accept.

    Args:
        cfg (Mapping): A config (``mmengine.Config`` or dict).

    Raises:
        ConfigError: Naming the key path, the class, the bad argument and the
            closest valid one; or an unknown ``type``.
    """
    _check_typed(cfg.get('model'), 'model', MODELS, recurse_models=True)
    _check_typed(cfg.get('data_preprocessor'), 'data_preprocessor', MODELS)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        _check_dataloader(cfg.get(name), name)
    wrapper = cfg.get('optim_wrapper')
    if isinstance(wrapper, Mapping):
        if 'type' in wrapper:
            _check_typed(wrapper, 'optim_wrapper', OPTIM_WRAPPERS, extra=_OPTIM_WRAPPER_KEYS)
        _check_typed(wrapper.get('optimizer'), 'optim_wrapper.optimizer', OPTIMIZERS)
    for i, sched in enumerate(_as_list(cfg.get('param_scheduler'))):
        _check_typed(sched, f'param_scheduler[{i}]', PARAM_SCHEDULERS, extra=_SCHEDULER_KEYS)
    hooks = cfg.get('default_hooks')
    if isinstance(hooks, Mapping):
        for key, hook in hooks.items():
            _check_typed(hook, f'default_hooks.{key}', HOOKS)
    for i, hook in enumerate(_as_list(cfg.get('custom_hooks'))):
        _check_typed(hook, f'custom_hooks[{i}]', HOOKS)
    for name in ('val_evaluator', 'test_evaluator'):
        for i, metric in enumerate(_as_list(cfg.get(name))):
            _check_typed(metric, f'{name}[{i}]' if i else name, METRICS)
    for name in ('train_cfg', 'val_cfg', 'test_cfg'):
        _check_loop(cfg.get(name), name)
    visualizer = cfg.get('visualizer')
    _check_typed(visualizer, 'visualizer', VISUALIZERS, extra={'vis_backends'})
    if isinstance(visualizer, Mapping):
        for i, backend in enumerate(_as_list(visualizer.get('vis_backends'))):
            _check_typed(backend, f'visualizer.vis_backends[{i}]', VISBACKENDS)


def check_sections(cfg: Mapping, sections: Sequence[str] = TEST_SECTIONS) -> None:
    """:func:`check_config_keys` on the sections a tool builds, in the config's scope.

    Args:
        cfg (Mapping): The config.
        sections (Sequence[str]): Its top-level keys to check. Defaults to
            :data:`TEST_SECTIONS`.

    Raises:
        ConfigError: As :func:`check_config_keys`.
    """
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get('default_scope') or 'mmdmpt')
    check_config_keys({key: cfg.get(key) for key in sections})


def _runner_arguments() -> Set[str]:
    from mmengine.runner import Runner

    return set(inspect.signature(Runner.__init__).parameters) - {'self'}


def check_cfg_options(cfg: Mapping, options: Optional[Dict[str, Any]]) -> None:
    """Refuse ``--cfg-options`` keys that match nothing in ``cfg``.

    Call before merging. A key must exist in the config, except its last
    part when the dict it lands in has a ``type`` (a new constructor
    argument, checked by :func:`check_config_keys` after the merge) or when
    it is a new top-level Runner argument.

    Args:
        cfg (Mapping): The config as read from the file.
        options (dict, optional): The parsed ``--cfg-options``.

    Raises:
        ConfigError: Naming the key, the part that matches nothing and the
            closest existing key.
    """
    root = getattr(cfg, '_cfg_dict', cfg)  # an mmengine Config wraps a ConfigDict
    for full_key in options or {}:
        parts = str(full_key).split('.')
        node: Any = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = '.'.join(parts[: depth + 1])
            if isinstance(node, Mapping):
                if part in node:
                    node = node[part]
                    continue
                if depth == 0:
                    allowed = _runner_arguments() | _TOP_LEVEL_EXTRA
                    if last and part in allowed:
                        break
                    candidates = sorted(set(map(str, node)) | allowed)
                elif last and ('type' in node or (depth == 1 and parts[0] in _LOOP_CONFIGS)):
                    break  # a new constructor argument; check_config_keys decides
                else:
                    candidates = list(node)
                parent = '.'.join(parts[:depth])
                there = f'the keys of {parent}' if parent else 'the top-level keys'
                raise ConfigError(
                    f'--cfg-options {full_key}: {part!r} matches nothing in '
                    f'{parent or "the config"}{_suggestion(part, candidates)} ({there}: '
                    f'{", ".join(sorted(map(str, candidates))[:20])}).'
                )
            if isinstance(node, (list, tuple)) and part.lstrip('-').isdigit():
                index = int(part)
                if -len(node) <= index < len(node):
                    node = node[index]
                    continue
                raise ConfigError(
                    f'--cfg-options {full_key}: index {index} at {where!r} is out of range '
                    f'(the list has {len(node)} entries).'
                )
            parent = '.'.join(parts[:depth]) or 'the config'
            raise ConfigError(
                f'--cfg-options {full_key}: {parent} is a {type(node).__name__}, not a dict, '
                f'so it has no key {part!r}.'
            )
