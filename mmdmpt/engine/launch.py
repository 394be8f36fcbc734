"""What the tools share to read a config and start a Runner.

``tools/train.py``, ``tools/test.py`` and ``tools/demo.py`` stay thin: they
parse their arguments and call these functions.
"""

import os
import os.path as osp
import shutil
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence

from mmdmpt.utils.errors import ConfigError, DataNotFoundError

from .config_check import check_cfg_options
from .prepare import DATALOADERS, fill_data_settings, set_data_root

__all__ = [
    'load_config',
    'load_config_with_options',
    'merge_cfg_options',
    'missing_data_roots',
    'build_runner',
    'remove_failed_start',
    'teardown_distributed',
]

DATA_HELP = 'README.md, section "Data and weights preparation"'


def load_config(path: str):
    """Read a config file; a missing or broken file is a :class:`ConfigError`.

    The datasets' ``type`` / ``data_root`` are filled from the config's
    ``dataset_type`` / ``data_root`` (:func:`~mmdmpt.engine.prepare.fill_data_settings`).

    Args:
        path (str): The config file.

    Returns:
        mmengine.Config: The config.
    """
    from mmengine.config import Config

    if not osp.isfile(path):
        raise ConfigError(
            f'config file not found: {path}; expected a .py config, e.g. '
            'configs/dmpt/dmpt_vitb_rgbnt201.py.'
        )
    try:
        cfg = Config.fromfile(path)
    except (SyntaxError, NameError, KeyError, ImportError, FileNotFoundError) as exc:
        raise ConfigError(f'cannot read the config {path}: {type(exc).__name__}: {exc}') from None
    fill_data_settings(cfg)
    return cfg


def merge_cfg_options(
    cfg, options: Optional[Dict[str, Any]], data_root: Optional[str] = None
) -> None:
    """Apply ``--cfg-options`` (refusing unknown keys) and ``--data-root``.

    Args:
        cfg (mmengine.Config): The config, changed in place.
        options (dict, optional): Parsed ``--cfg-options``.
        data_root (str, optional): ``--data-root``: every split's root.
    """
    fill_data_settings(cfg)  # so that dataset keys exist for the check below
    if options:
        check_cfg_options(cfg, options)
        cfg.merge_from_dict(options)
    if data_root is not None:
        set_data_root(cfg, data_root)


def load_config_with_options(
    path: str, options: Optional[Sequence[str]] = None, data_root: Optional[str] = None
):
    """:func:`load_config`, then ``--cfg-options`` as ``KEY=VALUE`` strings and ``--data-root``.

    The analysis, search, deployment and dataset tools take ``--cfg-options``
    as plain strings (so that ``--help`` imports nothing heavy); they are
    parsed here as MMEngine's ``DictAction`` parses them and merged by
    :func:`merge_cfg_options` (unknown keys refused).

    Args:
        path (str): The config file.
        options (Sequence[str], optional): ``KEY=VALUE`` strings.
        data_root (str, optional): ``--data-root``.

    Returns:
        mmengine.Config: The config.

    Raises:
        ConfigError: On a missing or broken file, a malformed option or an
            unknown key.
    """
    import argparse

    from mmengine.config import DictAction

    cfg = load_config(path)
    parsed = argparse.Namespace(cfg_options=None)
    if options:
        try:
            DictAction(option_strings=['--cfg-options'], dest='cfg_options')(None, parsed, options)
        except Exception as exc:
            raise ConfigError(f'--cfg-options {" ".join(options)}: {exc}') from None
    merge_cfg_options(cfg, parsed.cfg_options, data_root)
    return cfg


def missing_data_roots(cfg, loaders: Iterable[str] = DATALOADERS) -> List[str]:
    """The dataloaders' data roots that do not exist, one message per root.

    Args:
        cfg (mmengine.Config): A config whose datasets have ``data_root``
            (see :func:`~mmdmpt.engine.prepare.fill_data_settings`).
        loaders (Iterable[str]): Which dataloaders to look at. Defaults to
            all three.

    Returns:
        list[str]: One message per missing root, naming the dataloaders
        that read it.
    """
    users: Dict[str, List[str]] = {}
    types: Dict[str, Any] = {}
    for name in loaders:
        loader = cfg.get(name)
        dataset = loader.get('dataset') if isinstance(loader, Mapping) else None
        root = dataset.get('data_root') if isinstance(dataset, Mapping) else None
        if root and not osp.isdir(root):
            users.setdefault(root, []).append(name)
            types[root] = dataset.get('type')
    return [
        f'data_root "{root}" ({types[root]}; read by {", ".join(names)}) does not exist. Put '
        f'the dataset there in its official layout (see {DATA_HELP}), or pass --data-root PATH.'
        for root, names in users.items()
    ]


def missing_inputs_error(problems: List[str], what: str) -> DataNotFoundError:
    """One error listing every missing input."""
    lines = [f'Cannot start {what}, missing inputs:'] + [f'- {p}' for p in problems]
    return DataNotFoundError('\n'.join(lines))


def build_runner(cfg):
    """Build the Runner of a config: its ``runner_type`` (``ReIDRunner``) or MMEngine's.

    Args:
        cfg (mmengine.Config): The config.

    Returns:
        mmengine.runner.Runner: The runner.
    """
    from mmengine.registry import RUNNERS, init_default_scope
    from mmengine.runner import Runner

    if 'runner_type' in cfg:
        init_default_scope(cfg.get('default_scope', 'mmdmpt'))
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def remove_failed_start(runner, work_dir_created: bool = False) -> None:
    """Remove what a Runner wrote when it stopped before training or testing anything.

    The run's timestamped log folder goes when no iteration ran and no
    checkpoint was written; with ``work_dir_created`` (a folder this tool
    made for the run, e.g. ``test_<timestamp>``) the work dir goes too when
    nothing else is left in it.

    Args:
        runner: The Runner (may be None).
        work_dir_created (bool): Whether the tool created ``runner.work_dir``
            for this run. Defaults to False.
    """
    if runner is None:
        return
    try:
        ran = getattr(runner, 'iter', 0) > 0
    except Exception:  # the train loop may not exist
        ran = False
    log_dir = getattr(runner, 'log_dir', None)
    if not ran and log_dir and osp.isdir(log_dir):
        shutil.rmtree(log_dir, ignore_errors=True)
    work_dir = getattr(runner, 'work_dir', None)
    if work_dir_created and work_dir and osp.isdir(work_dir):
        leftover = [n for n in os.listdir(work_dir) if not n.endswith('.py')]
        if not leftover:
            shutil.rmtree(work_dir, ignore_errors=True)


def teardown_distributed() -> None:
    """End a process group cleanly (gloo ranks can abort at exit otherwise)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
