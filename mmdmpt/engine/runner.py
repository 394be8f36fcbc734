"""The Runner of mmdmpt: MMEngine's, able to run distributed on CPU-only machines.

It also makes checkpoints reliable (see ``docs/reliability.md``): loading
refuses files whose unpickling would run code, saving is atomic, and
auto-resume falls back to the newest complete checkpoint.
"""

import copy
import functools
import glob
import logging
import os
import os.path as osp
import re
import zipfile
from collections.abc import Mapping
from typing import Any, Callable, Dict, Optional, Union

import torch
import torch.distributed as torch_dist
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

from mmdmpt.registry import RUNNERS
from mmdmpt.utils.checkpoint import load_model_weights, read_checkpoint
from mmdmpt.utils.cli import quiet_third_party

from .prepare import prepare_config

_CKPT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file (a readable zip archive).

    ``torch.save`` writes a zip archive whose directory sits at the end of the
    file, so a truncated file fails this check. The tensors are not read.

    Args:
        path (str): A local file.

    Returns:
        bool: True when the file exists and its zip directory is readable.
    """
    if not osp.isfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def find_latest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint to auto-resume from, skipping missing or truncated files.

    The ``last_checkpoint`` pointer is used when it names a complete file;
    otherwise the newest complete ``epoch_*.pth`` / ``iter_*.pth`` in
    ``work_dir`` (by modification time, then number) is taken.

    Args:
        work_dir (str): The work dir of the run.

    Returns:
        str | None: The checkpoint path, or None when there is none.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        try:
            with open(pointer, encoding='utf-8') as f:
                named = f.read().strip()
        except (OSError, UnicodeDecodeError):
            named = ''
        if named and is_complete_checkpoint(named):
            return named
        print_log(
            f'{pointer} names "{named}", which is missing or incomplete: resuming from '
            'the newest complete checkpoint in the work dir instead.',
            logger='current',
            level=logging.WARNING,
        )
    candidates = []
    for path in glob.glob(osp.join(glob.escape(work_dir), '*.pth')):
        match = _CKPT_NAME.match(osp.basename(path))
        if match and is_complete_checkpoint(path):
            candidates.append((osp.getmtime(path), int(match.group(2)), path))
    if not candidates:
        return None
    return max(candidates)[2]


def _write_pointer(work_dir: str, target: str) -> None:
    """Write the ``last_checkpoint`` pointer atomically (temp file + rename)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    tmp = osp.join(work_dir, f'.last_checkpoint.tmp{os.getpid()}')
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(target)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, pointer)


def check_local_gpus(environ: Optional[Mapping] = None, device_count: Optional[int] = None) -> None:
    """Fail clearly when a node starts more GPU processes than it has GPUs.

    ``tools/dist_train.sh CONFIG N`` starts N processes per node; with CUDA
    available each takes the GPU of its local rank, so a rank beyond the
    visible devices would stop with CUDA's "invalid device ordinal".

    Args:
        environ (Mapping, optional): The launcher's environment
            (``LOCAL_WORLD_SIZE`` / ``LOCAL_RANK``). Defaults to ``os.environ``.
        device_count (int, optional): Visible CUDA devices. Defaults to
            ``torch.cuda.device_count()``.

    Raises:
        RuntimeError: If the processes on this node outnumber its GPUs.
    """
    environ = os.environ if environ is None else environ
    count = torch.cuda.device_count() if device_count is None else int(device_count)
    local_rank = int(environ.get('LOCAL_RANK', 0))
    local_size = int(environ.get('LOCAL_WORLD_SIZE', local_rank + 1))
    if max(local_size, local_rank + 1) > count:
        raise RuntimeError(
            f'{local_size} processes on this node (LOCAL_WORLD_SIZE) but {count} visible '
            f'CUDA device(s): each process needs its own GPU. Start at most {count} '
            f'(tools/dist_train.sh CONFIG {count}), or hide the GPUs with '
            'CUDA_VISIBLE_DEVICES= to run the processes on the CPU (gloo).'
        )


@RUNNERS.register_module()
class ReIDRunner(Runner):
    """MMEngine's Runner, plus distributed runs on machines without a GPU.

    MMEngine's ``pytorch`` launcher calls ``torch.cuda.set_device`` and wraps
    the model in DDP with CUDA ``device_ids``; both fail without a GPU. Here,
    when no GPU is present, the process group is started with the gloo backend
    and DDP gets no device ids, so ``tools/dist_train.sh`` and
    ``tools/dist_test.sh`` also run on a CPU (which is how the tests exercise
    them). With a GPU nothing changes.

    ``from_cfg`` first derives the values a config states once (datasets'
    ``type`` / ``data_root`` from ``dataset_type`` / ``data_root``,
    ``num_classes='auto'``) and checks its keys (:mod:`mmdmpt.engine.prepare`),
    so a mistake fails before any folder is written. Checkpoints are read by
    :func:`mmdmpt.utils.checkpoint.read_checkpoint` and must fit the model
    (:func:`~mmdmpt.utils.checkpoint.load_model_weights`); when testing, a
    different ID classifier is tolerated.
    """

    @classmethod
    def from_cfg(cls, cfg) -> 'ReIDRunner':
        """Prepare the config (see the class docstring), then build the Runner."""
        cfg = copy.deepcopy(cfg)
        checkpoint = None
        load_from = cfg.get('load_from')
        head = ((cfg.get('model') or {}).get('head') or {}) if isinstance(cfg, Mapping) else {}
        if (
            head.get('num_classes') == 'auto'
            and not cfg.get('train_dataloader')
            and isinstance(load_from, str)
            and osp.isfile(load_from)
        ):
            checkpoint = read_checkpoint(load_from, mmap=True)
        prepare_config(cfg, checkpoint)
        return super().from_cfg(cfg)

    def build_logger(self, *args: Any, **kwargs: Any):
        """MMEngine's logger, without third-party deprecation noise."""
        logger = super().build_logger(*args, **kwargs)
        quiet_third_party(logger)
        return logger

    def test(self) -> dict:
        """Test; the checkpoint loaded for it may have another ID classifier."""
        self._loading_for_test = True
        try:
            return super().test()
        finally:
            self._loading_for_test = False

    def setup_env(self, env_cfg: Dict) -> None:
        """Start a gloo process group first when distributed without a GPU."""
        if self.distributed and self.launcher == 'pytorch' and torch.cuda.is_available():
            check_local_gpus()
        if self.distributed and not torch.cuda.is_available():
            env_cfg = dict(env_cfg)
            dist_cfg = dict(env_cfg.get('dist_cfg') or {})
            dist_cfg['backend'] = 'gloo'
            env_cfg['dist_cfg'] = dist_cfg
            if self.launcher == 'pytorch' and not torch_dist.is_initialized():
                kwargs = {k: v for k, v in dist_cfg.items() if k not in ('backend', 'timeout')}
                torch_dist.init_process_group(backend='gloo', **kwargs)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg: Optional[Dict], model: torch.nn.Module):
        """Wrap in DDP without device ids when distributed without a GPU."""
        if self.distributed and not torch.cuda.is_available():
            model_wrapper_cfg = dict(
                model_wrapper_cfg
                or dict(
                    type='MMDistributedDataParallel',
                    broadcast_buffers=False,
                    find_unused_parameters=self.cfg.get('find_unused_parameters', False),
                )
            )
            model_wrapper_cfg['device_ids'] = None
        model = super().wrap_model(model_wrapper_cfg, model)
        self._stash_loss_terms(model.module if is_model_wrapper(model) else model)
        return model

    # --------------------------------------------------------- loss terms
    def _stash_loss_terms(self, model: torch.nn.Module) -> None:
        """Keep the per-term losses of the last ``parse_losses`` call.

        ``NonFiniteCheckOptimWrapper`` names the offending loss term from them
        (they are computed before the optimizer step; the message hub gets
        them only after it). The tensors are detached references: no copy
        and no device synchronisation.
        """
        self.last_loss_terms: Dict[str, torch.Tensor] = {}
        parse_losses = getattr(model, 'parse_losses', None)
        if parse_losses is None or getattr(parse_losses, '_mmdmpt_stash', False):
            return

        @functools.wraps(parse_losses)
        def stashing_parse_losses(losses: Dict[str, Any]):
            terms: Dict[str, torch.Tensor] = {}
            for name, value in losses.items():
                if isinstance(value, torch.Tensor):
                    terms[name] = value.detach()
                elif isinstance(value, (list, tuple)) and all(
                    isinstance(v, torch.Tensor) for v in value
                ):
                    terms[name] = sum(v.detach().mean() for v in value)
            self.last_loss_terms = terms
            return parse_losses(losses)

        stashing_parse_losses._mmdmpt_stash = True  # type: ignore[attr-defined]
        model.parse_losses = stashing_parse_losses

    def build_optim_wrapper(self, optim_wrapper: Any) -> Any:
        """Build the optimizer wrapper; wire the non-finite check; set the AMP compute dtype.

        A non-finite check gets the loss terms and reads its device flag in
        :meth:`call_hook`, before the ``after_train_iter`` hooks (see
        :class:`~mmdmpt.engine.NonFiniteCheckOptimWrapper`). Under AMP a
        backbone with ``set_compute_dtype`` and no compute dtype of its own
        keeps its frozen tower in the AMP dtype from now on (one cast, not one
        per forward; the same results as autocast's casts).
        """
        wrapper = super().build_optim_wrapper(optim_wrapper)
        wrappers = list(wrapper.values()) if hasattr(wrapper, 'optim_wrappers') else [wrapper]
        for one in wrappers:
            if hasattr(one, 'loss_terms_getter'):
                one.loss_terms_getter = lambda: getattr(self, 'last_loss_terms', {})
            if hasattr(one, 'check_pending'):
                one.deferred_check = True
        self._set_amp_compute_dtype(wrappers)
        return wrapper

    def _set_amp_compute_dtype(self, wrappers: list) -> None:
        amp = [w for w in wrappers if isinstance(w, AmpOptimWrapper)]
        if not amp:
            return
        model = self.model.module if is_model_wrapper(self.model) else self.model
        backbone = getattr(model, 'backbone', None)
        if not hasattr(backbone, 'set_compute_dtype') or backbone.compute_dtype is not None:
            return
        device = next(model.parameters()).device.type
        dtype = amp[0].cast_dtype
        if dtype is None:
            dtype = torch.get_autocast_dtype(device if device != 'cpu' else 'cuda')
        backbone.set_compute_dtype(dtype)
        self.logger.info(f'AMP: the frozen backbone tower is kept in {dtype}.')

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """Call the hooks; first read a pending non-finite check before ``after_train_iter``."""
        if fn_name == 'after_train_iter':
            wrapper = getattr(self, 'optim_wrapper', None)
            wrappers = wrapper.values() if hasattr(wrapper, 'optim_wrappers') else [wrapper]
            for one in wrappers:
                if hasattr(one, 'check_pending'):
                    one.check_pending()
        super().call_hook(fn_name, **kwargs)

    # ------------------------------------------------------------ checkpoints
    def load_checkpoint(
        self,
        filename: str,
        map_location: Union[str, Callable] = 'cpu',
        strict: bool = False,
        revise_keys: list = [(r'^module.', '')],  # noqa: B006 (MMEngine's signature)
    ) -> dict:
        """Load a checkpoint safely and strictly.

        Local files are read with :func:`mmdmpt.utils.checkpoint.read_checkpoint`
        (``torch.load(weights_only=True)``: pickled code never runs; a file
        that is not a checkpoint is refused by name); other URIs go through
        MMEngine's loaders. The tensors must fit the model whatever
        ``strict`` says (:func:`~mmdmpt.utils.checkpoint.load_model_weights`):
        missing frozen tensors come from the pretrained file the model was
        built with, and only during :meth:`test` may the ID classifier differ.
        ``resume``, ``load_from`` and ``tools/test.py`` all come here.

        Args:
            filename (str): The checkpoint file or URI.
            map_location (str | Callable): Where to map the tensors.
                Defaults to ``'cpu'``.
            strict (bool): Kept for MMEngine's signature; loading is always
                strict about what the model trains. Defaults to False.
            revise_keys (list): ``(pattern, replacement)`` pairs applied to the
                state-dict keys. Defaults to stripping ``module.``.

        Returns:
            dict: The loaded checkpoint.

        Raises:
            CheckpointError: If the file is not a safe, fitting checkpoint.
        """
        if osp.isfile(filename) or '://' not in str(filename):
            checkpoint = read_checkpoint(filename, map_location=map_location)
        else:
            checkpoint = dict(_load_checkpoint(filename, map_location=map_location))
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        load_model_weights(
            model,
            checkpoint,
            filename,
            model_cfg=self.cfg.get('model') if self.cfg is not None else None,
            for_test=getattr(self, '_loading_for_test', False),
            revise_keys=[(p, r) for p, r in revise_keys if p not in (r'^module.', r'^module\.')],
        )
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def load_or_resume(self) -> None:
        """Load or resume; auto-resume skips missing or truncated checkpoints."""
        if self._has_loaded:
            return None
        if self._resume and self._load_from is None:
            resume_from = find_latest_complete_checkpoint(self.work_dir)
            self.logger.info(f'Auto resumed from the latest checkpoint {resume_from}.')
            if resume_from is not None:
                self.resume(resume_from)
                self._has_loaded = True
            return None
        return super().load_or_resume()

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args: Any, **kwargs: Any) -> None:
        """Save a checkpoint atomically.

        MMEngine's writer is pointed at a hidden temporary file in the same
        folder (``.{filename}.tmp``), which is then renamed into place with
        ``os.replace``; a kill mid-write leaves at most that hidden file, never a
        truncated ``epoch_N.pth``. The ``last_checkpoint`` pointer is then
        written atomically too (``CheckpointHook`` rewrites it with the same
        content afterwards; should that write be cut, auto-resume falls back to
        the newest complete checkpoint). Non-local ``backend_args`` /
        ``file_client_args`` go to MMEngine unchanged.

        Args:
            out_dir (str): The folder of the checkpoint.
            filename (str): The checkpoint's file name.
            *args: Passed to :meth:`mmengine.runner.Runner.save_checkpoint`.
            **kwargs: Passed to :meth:`mmengine.runner.Runner.save_checkpoint`.
        """
        remote = (
            kwargs.get('backend_args')
            or kwargs.get('file_client_args')
            or (args[0] if args else None)
        )
        if remote or not osp.isdir(out_dir):
            super().save_checkpoint(out_dir, filename, *args, **kwargs)
            return
        final = osp.join(out_dir, filename)
        tmp_name = osp.join(osp.dirname(filename), f'.{osp.basename(filename)}.tmp')
        tmp = osp.join(out_dir, tmp_name)
        try:
            super().save_checkpoint(out_dir, tmp_name, *args, **kwargs)
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise
        if _CKPT_NAME.match(osp.basename(filename)) and osp.isdir(self.work_dir):
            _write_pointer(self.work_dir, final)
