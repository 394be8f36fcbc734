"""Optimizer wrappers that refuse (or skip) steps on a non-finite loss.

:class:`NonFiniteCheckOptimWrapper` is the default of the schedules in
``configs/_base_/schedules/``; ``tools/train.py --amp`` swaps it for
:class:`AmpNonFiniteCheckOptimWrapper`, its mixed-precision twin.
"""

import logging
from typing import Any, Callable, Dict, NamedTuple, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmdmpt.registry import OPTIM_WRAPPERS
from mmdmpt.utils.errors import ConfigError, TrainingError

ON_NONFINITE = ('raise', 'skip')


class NonFiniteCheckMixin:
    """The non-finite loss check shared by the plain and the AMP wrappers.

    Mixed in before an MMEngine ``OptimWrapper`` class; it overrides
    ``update_params`` and relies on the wrapper's ``backward``,
    ``zero_grad`` and ``_inner_count``. See :class:`NonFiniteCheckOptimWrapper`.
    """

    def __init__(
        self, *args, on_nonfinite: str = 'raise', max_skips: Optional[int] = None, **kwargs
    ) -> None:
        if on_nonfinite not in ON_NONFINITE:
            raise ConfigError(
                f'optim_wrapper.on_nonfinite={on_nonfinite!r} is not supported; expected one '
                f'of {ON_NONFINITE}'
            )
        if max_skips is not None and (not isinstance(max_skips, int) or max_skips < 0):
            raise ConfigError(
                f'optim_wrapper.max_skips={max_skips!r} is not supported; expected an int >= 0 '
                'or None (no limit)'
            )
        super().__init__(*args, **kwargs)
        self.on_nonfinite = on_nonfinite
        self.max_skips = max_skips
        self.skipped_steps = 0
        self.loss_terms_getter: Optional[Callable[[], Dict[str, torch.Tensor]]] = None
        #: Read the device check's flag in :meth:`check_pending` when the Runner
        #: calls it (``ReIDRunner`` sets this) instead of at the end of each update.
        self.deferred_check = False
        self._bad_since_step: Optional[torch.Tensor] = None
        self._last_update: Optional[_Update] = None
        self._pending: Optional[_Update] = None

    # ----------------------------------------------------------------- checks
    @staticmethod
    def _any_rank(flag: bool, device: torch.device) -> bool:
        if get_world_size() <= 1 or not torch_dist.is_initialized():
            return flag
        if torch_dist.get_backend() == 'nccl' and device.type != 'cuda':
            device = torch.device('cuda', torch.cuda.current_device())
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    @staticmethod
    def _message(
        iteration: Optional[int],
        epoch: Optional[int],
        terms: Dict[str, Any],
        loss: torch.Tensor,
    ) -> str:
        """``Non-finite loss at <where>: <what>``, naming the bad loss terms of this rank.

        Without a bad term, the summed loss when it is not finite here, else
        another rank's loss (the flag was reduced over the ranks).
        """
        where = (
            f'iteration {int(iteration) + 1}' if iteration is not None else 'an unknown iteration'
        )
        if epoch is not None:
            where += f' (epoch {int(epoch) + 1})'
        bad = [
            f'{name}={value.float().mean().item()}'
            for name, value in terms.items()
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all())
        ]
        if bad:
            what = f'loss term(s) {", ".join(bad)}'
        elif not bool(torch.isfinite(loss.detach()).all()):
            what = f'the summed loss ({loss.detach().float().item()})'
        else:
            what = 'a loss term on another rank'
        return f'Non-finite loss at {where}: {what}'

    def _describe(self, loss: torch.Tensor) -> str:
        """:meth:`_message` of the current iteration (for the host check)."""
        hub = MessageHub.get_current_instance()
        terms = self.loss_terms_getter() if self.loss_terms_getter is not None else {}
        return self._message(hub.get_info('iter'), hub.get_info('epoch'), terms, loss)

    # ----------------------------------------------------------------- update
    def uses_device_check(self) -> bool:
        """Whether the check runs on the device (the optimizer takes ``found_inf``).

        True for fused optimizers (``torch.optim.Adam(fused=True)``, the
        schedules' default, AdamW, SGD): they accept a ``found_inf`` flag and
        skip the whole update on the device when it is set, as they do for
        the ``GradScaler``.
        """
        return bool(getattr(self.optimizer, '_step_supports_amp_scaling', False))

    def update_params(
        self,
        loss: torch.Tensor,
        step_kwargs: Optional[Dict] = None,
        zero_kwargs: Optional[Dict] = None,
    ) -> None:
        """Check ``loss``; then update as ``OptimWrapper`` does, raise or skip.

        With a fused optimizer (:meth:`uses_device_check`) nothing is read on
        the host here: ``~isfinite(loss)`` stays on the device and is handed
        to the optimizer as its ``found_inf``, which makes the update of a
        non-finite step a no-op (weights, moments and step counts unchanged);
        the flag is read afterwards by :meth:`check_pending` (see
        :attr:`deferred_check`). With another optimizer the loss is checked on
        the host before the backward pass.

        Args:
            loss (torch.Tensor): The summed loss.
            step_kwargs (dict, optional): For ``optimizer.step``.
            zero_kwargs (dict, optional): For ``optimizer.zero_grad``.

        Raises:
            TrainingError: On a non-finite loss with ``'raise'``, or past
                ``max_skips`` with ``'skip'`` (a ``FloatingPointError``).
        """
        if not self.uses_device_check():
            self._update_checked_on_host(loss, step_kwargs, zero_kwargs)
            return
        self.check_pending()  # a step nobody checked yet (no ReIDRunner): now
        bad = ~torch.isfinite(loss.detach())
        if get_world_size() > 1 and torch_dist.is_initialized():
            flag = bad.float().reshape(1)
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)  # on the device
            bad = flag.reshape(()) > 0
        self._bad_since_step = bad if self._bad_since_step is None else self._bad_since_step | bad
        hub = MessageHub.get_current_instance()
        terms = self.loss_terms_getter() if self.loss_terms_getter is not None else {}
        self._last_update = _Update(
            loss.detach(), dict(terms), hub.get_info('iter'), hub.get_info('epoch')
        )
        super().update_params(loss, step_kwargs, zero_kwargs)
        if not self.deferred_check:
            self.check_pending()

    def step(self, **kwargs: Any) -> None:
        """The optimizer step; a no-op on the device after a non-finite loss."""
        bad, self._bad_since_step = self._bad_since_step, None
        if bad is None:
            super().step(**kwargs)
            return
        self._step_unless(bad, **kwargs)
        self._pending = self._last_update._replace(bad=bad)

    def _step_unless(self, bad: torch.Tensor, **kwargs: Any) -> None:
        """``optimizer.step`` with ``found_inf = bad`` (a no-op on the device when set)."""
        self.optimizer.found_inf = bad.float()
        try:
            super().step(**kwargs)
        finally:
            del self.optimizer.found_inf

    def check_pending(self) -> None:
        """Read the non-finite flag of the last step on the host; raise or count a skip.

        :class:`~mmdmpt.engine.ReIDRunner` calls it once per iteration before
        the ``after_train_iter`` hooks (where MMEngine reads the loss values
        for logging anyway), so the error names the iteration and the loss
        term before the iteration ends, as the host check does. Without that
        Runner (``deferred_check`` False) it runs at the end of
        :meth:`update_params`.
        """
        pending, self._pending = self._pending, None
        if pending is None or not bool(pending.bad):
            return
        self._handle_bad(
            self._message(pending.iteration, pending.epoch, pending.terms, pending.loss),
            'Training stopped; the optimizer step was skipped (weights unchanged)',
        )

    def _update_checked_on_host(
        self,
        loss: torch.Tensor,
        step_kwargs: Optional[Dict] = None,
        zero_kwargs: Optional[Dict] = None,
    ) -> None:
        """The check for optimizers without ``found_inf``: read the loss on the host first."""
        local_bad = not bool(torch.isfinite(loss.detach()).all())
        if not self._any_rank(local_bad, loss.device):
            super().update_params(loss, step_kwargs, zero_kwargs)
            return
        message = self._describe(loss)
        skipped = self._handle_bad(
            message, 'Training stopped before the optimizer step (weights unchanged)'
        )
        if skipped:
            if get_world_size() > 1:
                self.backward(loss)  # keep DDP's reducer in step on every rank
            else:
                self._inner_count += 1
            self.zero_grad(**(zero_kwargs or {}))

    def _handle_bad(self, message: str, stopped: str) -> bool:
        """Raise (``'raise'``, or past ``max_skips``) or count and log a skipped step."""
        if self.on_nonfinite == 'raise':
            raise TrainingError(
                f'{message}. {stopped}; lower the learning rate (optim_wrapper.optimizer.lr) '
                "or check the data, or set optim_wrapper.on_nonfinite='skip' to skip such "
                'steps instead.'
            )
        self.skipped_steps += 1
        MessageHub.get_current_instance().update_info('nonfinite_skipped_steps', self.skipped_steps)
        if self.max_skips is not None and self.skipped_steps > self.max_skips:
            raise TrainingError(
                f'{message}. {self.skipped_steps} steps skipped, more than '
                f'max_skips={self.max_skips}: training stopped; lower the learning rate '
                '(optim_wrapper.optimizer.lr) or raise optim_wrapper.max_skips.'
            )
        print_log(
            f'{message}: step skipped ({self.skipped_steps} so far).',
            logger='current',
            level=logging.WARNING,
        )
        return True


class _Update(NamedTuple):
    """What the device check keeps of an update until its flag is read."""

    loss: torch.Tensor
    terms: Dict[str, torch.Tensor]
    iteration: Optional[int]
    epoch: Optional[int]
    bad: Optional[torch.Tensor] = None


@OPTIM_WRAPPERS.register_module()
class NonFiniteCheckOptimWrapper(NonFiniteCheckMixin, OptimWrapper):
    """``OptimWrapper`` whose optimizer never applies the update of a non-finite loss.

    The default wrapper of the schedules in ``configs/_base_/schedules/``. A
    NaN or infinite loss never changes the weights or the optimizer state:

    - ``on_nonfinite='raise'`` (default): stop training with a
      ``FloatingPointError`` naming the iteration (1-based, as in the logs)
      and the non-finite loss term(s).
    - ``on_nonfinite='skip'``: drop the step (the gradients, including any
      accumulated ones, are zeroed), log a warning and count it in
      :attr:`skipped_steps` and in the message hub's runtime info
      ``'nonfinite_skipped_steps'``; training stops with the same error once
      more than ``max_skips`` steps were skipped (``None``: never).

    The loss terms come from :class:`~mmdmpt.engine.ReIDRunner`, which keeps
    the per-term losses of the model's last ``parse_losses`` call (see
    :attr:`loss_terms_getter`); with another Runner the message names the
    summed loss only. In distributed runs the decision is all-reduced, so every
    rank raises or skips the same step (a skipping rank still runs the backward
    pass, to keep DDP's gradient synchronisation in step).

    Two ways to check, the same outcome:

    - **on the device** (fused optimizers such as the schedules'
      ``Adam(fused=True)``; :meth:`uses_device_check`): the backward pass
      and the step always run, the optimizer gets ``found_inf =
      ~isfinite(loss)`` and skips the whole update on the device when it is
      set (as it does for the ``GradScaler``). No device value is read on the
      host during the step; :meth:`check_pending` reads the flag afterwards:
      ``ReIDRunner`` calls it before the iteration's ``after_train_iter``
      hooks (where MMEngine reads every logged loss value anyway), so the
      error still names the iteration and the loss term, ``runner.iter`` has
      not advanced and the weights are those before the bad step. With
      another Runner the flag is read at the end of :meth:`update_params`.
    - **on the host** (other optimizers): the loss is read before the
      backward pass and a bad step never reaches the optimizer.

    Args:
        on_nonfinite (str): ``'raise'`` or ``'skip'``. Defaults to ``'raise'``.
        max_skips (int, optional): With ``'skip'``, raise after this many
            skipped steps. Defaults to None.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper`.
    """


@OPTIM_WRAPPERS.register_module()
class AmpNonFiniteCheckOptimWrapper(NonFiniteCheckMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` with the non-finite loss check of :class:`NonFiniteCheckOptimWrapper`.

    ``tools/train.py --amp`` picks it for configs that use the check (the
    default schedules). The check concerns the loss value itself (the
    unscaled summed loss, before ``loss_scaler.scale``), as without AMP:
    with ``float16`` the ``GradScaler`` keeps handling infinite or NaN
    *gradients* (it skips that step and lowers the scale), which is normal
    while the scale settles and is not reported; a non-finite *loss* is
    raised (or skipped and counted) whatever the dtype. With ``bfloat16``
    the scaler is rarely needed (``loss_scale`` may stay ``'dynamic'``);
    the loss check is the same. With a fused optimizer the loss flag joins
    the scaler's own ``found_inf`` (the scaler then also lowers its scale),
    so the AMP step reads nothing on the host either.

    Needs a CUDA (or NPU / MLU / MUSA) device, as ``AmpOptimWrapper`` does.

    Args:
        on_nonfinite (str): ``'raise'`` or ``'skip'``. Defaults to ``'raise'``.
        max_skips (int, optional): With ``'skip'``, raise after this many
            skipped steps. Defaults to None.
        **kwargs: Passed to :class:`mmengine.optim.AmpOptimWrapper`
            (``loss_scale``, ``dtype``, ``optimizer``, ...).
    """

    def _step_unless(self, bad: torch.Tensor, **kwargs: Any) -> None:
        scaler = self.loss_scaler
        if not scaler.is_enabled():  # (e.g. no GPU): a plain step with found_inf
            super()._step_unless(bad, **kwargs)
            return
        scaler.unscale_(self.optimizer)  # records the scaler's found_inf per device
        state = scaler._per_optimizer_states[id(self.optimizer)]
        for found in state['found_inf_per_device'].values():
            found.add_(bad.to(device=found.device, dtype=found.dtype))
        if self.clip_grad_kwargs:
            self._clip_grad()
        scaler.step(self.optimizer, **kwargs)
        scaler.update(self._scale_update_param)


__all__ = [
    'AmpNonFiniteCheckOptimWrapper',
    'NonFiniteCheckMixin',
    'NonFiniteCheckOptimWrapper',
    'ON_NONFINITE',
]
