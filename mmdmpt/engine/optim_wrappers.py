"""Optimizer wrappers that refuse (or skip) steps on a non-finite loss.

:class:`NonFiniteCheckOptimWrapper` is the default of the schedules in
``configs/_base_/schedules/``; ``tools/train.py --amp`` swaps it for
:class:`AmpNonFiniteCheckOptimWrapper`, its mixed-precision twin.
"""

import logging
from typing import Callable, Dict, List, Optional

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

    def _bad_terms(self) -> List[str]:
        terms = self.loss_terms_getter() if self.loss_terms_getter is not None else {}
        bad = []
        for name, value in terms.items():
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
                bad.append(f'{name}={value.float().mean().item()}')
        return bad

    def _describe(self, loss: torch.Tensor, local_bad: bool) -> str:
        hub = MessageHub.get_current_instance()
        it = hub.get_info('iter')
        epoch = hub.get_info('epoch')
        where = f'iteration {int(it) + 1}' if it is not None else 'an unknown iteration'
        if epoch is not None:
            where += f' (epoch {int(epoch) + 1})'
        if local_bad:
            terms = self._bad_terms()
            what = (
                f'loss term(s) {", ".join(terms)}'
                if terms
                else f'the summed loss ({loss.detach().float().item()})'
            )
        else:
            what = 'a loss term on another rank'
        return f'Non-finite loss at {where}: {what}'

    # ----------------------------------------------------------------- update
    def update_params(
        self,
        loss: torch.Tensor,
        step_kwargs: Optional[Dict] = None,
        zero_kwargs: Optional[Dict] = None,
    ) -> None:
        """Check ``loss``; then update as ``OptimWrapper`` does, raise or skip.

        Args:
            loss (torch.Tensor): The summed loss.
            step_kwargs (dict, optional): For ``optimizer.step``.
            zero_kwargs (dict, optional): For ``optimizer.zero_grad``.

        Raises:
            TrainingError: On a non-finite loss with ``'raise'``, or past
                ``max_skips`` with ``'skip'`` (a ``FloatingPointError``).
        """
        local_bad = not bool(torch.isfinite(loss.detach()).all())
        if not self._any_rank(local_bad, loss.device):
            super().update_params(loss, step_kwargs, zero_kwargs)
            return
        message = self._describe(loss, local_bad)
        if self.on_nonfinite == 'raise':
            raise TrainingError(
                f'{message}. Training stopped before the optimizer step (weights unchanged); '
                'lower the learning rate (optim_wrapper.optimizer.lr) or check the data, or '
                "set optim_wrapper.on_nonfinite='skip' to skip such steps instead."
            )
        self.skipped_steps += 1
        MessageHub.get_current_instance().update_info('nonfinite_skipped_steps', self.skipped_steps)
        if self.max_skips is not None and self.skipped_steps > self.max_skips:
            raise TrainingError(
                f'{message}. {self.skipped_steps} steps skipped, more than '
                f'max_skips={self.max_skips}: training stopped; lower the learning rate '
                '(optim_wrapper.optimizer.lr) or raise optim_wrapper.max_skips.'
            )
        if get_world_size() > 1:
            self.backward(loss)  # keep DDP's reducer in step on every rank
        else:
            self._inner_count += 1
        self.zero_grad(**(zero_kwargs or {}))
        print_log(
            f'{message}: step skipped ({self.skipped_steps} so far).',
            logger='current',
            level=logging.WARNING,
        )


@OPTIM_WRAPPERS.register_module()
class NonFiniteCheckOptimWrapper(NonFiniteCheckMixin, OptimWrapper):
    """``OptimWrapper`` that checks the loss before the backward pass and the step.

    The default wrapper of the schedules in ``configs/_base_/schedules/``. A
    NaN or infinite loss never reaches the optimizer, so the weights and the
    optimizer state stay finite:

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
    the loss check is the same.

    Needs a CUDA (or NPU / MLU / MUSA) device, as ``AmpOptimWrapper`` does.

    Args:
        on_nonfinite (str): ``'raise'`` or ``'skip'``. Defaults to ``'raise'``.
        max_skips (int, optional): With ``'skip'``, raise after this many
            skipped steps. Defaults to None.
        **kwargs: Passed to :class:`mmengine.optim.AmpOptimWrapper`
            (``loss_scale``, ``dtype``, ``optimizer``, ...).
    """


__all__ = [
    'AmpNonFiniteCheckOptimWrapper',
    'NonFiniteCheckMixin',
    'NonFiniteCheckOptimWrapper',
    'ON_NONFINITE',
]
