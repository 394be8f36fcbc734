"""Reseed the global random generators from the run's seed and its progress."""

from typing import Optional

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdmpt.registry import HOOKS
from mmdmpt.utils.errors import ConfigError
from mmdmpt.utils.seeding import EPOCH_TAG, EVAL_TAG, ITER_TAG, derive_seed, seed_global_rngs


@HOOKS.register_module()
class ReseedHook(Hook):
    """Make the randomness of training a function of ``(seed, epoch, iteration)``.

    MMEngine seeds ``random``, ``numpy.random`` and torch once, when the
    Runner is built, and a checkpoint stores none of their states; a resumed
    run therefore draws other random numbers (dropout, samplers that use the
    global generators, the data-loader workers' base seed) than the
    uninterrupted run did. This hook reseeds the three generators of the main
    process:

    - before every training epoch, from ``(seed, epoch, rank)``: what is drawn
      while the epoch's data iterator is created (e.g. a ``RandomSampler``'s
      permutation, the workers' base seed) no longer depends on the past;
    - before every training iteration, from ``(seed, global iteration,
      rank)``: the model's randomness in a step does not depend on how many
      numbers the data loading in this process drew, nor on whether the
      loader's workers were started in this epoch (persistent workers are
      started once per process);
    - before every validation and test epoch, from ``(seed, epoch, rank)``.

    ``seed`` is the Runner's ``randomness.seed`` (``runner.seed``; with
    ``diff_rank_seed`` it already differs per rank). Together with the
    per-sample seeds of :class:`~mmdmpt.datasets.IdentitySampler` (the
    augmentation of each sample), a run killed at any point and resumed from
    its last epoch checkpoint ends with the same weights as an uninterrupted
    one (``tests/test_reliability/test_exact_resume.py``).

    When no seed was configured (``randomness.seed=None``) the Runner draws
    one and a resumed run takes the checkpoint's; a sampler built with the
    drawn seed is then given the checkpoint's seed too, before training starts.

    Args:
        per_iter (bool): Also reseed before every training iteration.
            Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, per_iter: bool = True) -> None:
        if not isinstance(per_iter, bool):
            raise ConfigError(
                f'ReseedHook: per_iter must be a bool, got {per_iter!r}; expected True or False'
            )
        self.per_iter = per_iter
        self._seed_at_load: Optional[int] = None

    @staticmethod
    def _reseed(runner, tag: int, step: int) -> None:
        seed = runner.seed
        if seed is None:
            return
        seed_global_rngs(derive_seed(tag, int(seed), int(step), get_rank()), devices=True)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Remember the seed in use before a resume replaces it by the checkpoint's."""
        self._seed_at_load = runner.seed

    def before_train(self, runner) -> None:
        """Give the training sampler the resumed seed if it had the replaced one."""
        old, new = self._seed_at_load, runner.seed
        if old is None or new is None or old == new:
            return
        sampler = getattr(runner.train_dataloader, 'sampler', None)
        if getattr(sampler, 'seed', None) == old:
            sampler.seed = new
            print_log(
                f'ReseedHook: train_dataloader.sampler.seed set from {old} to {new}, the seed '
                'of the resumed checkpoint.',
                logger='current',
            )

    def before_train_epoch(self, runner) -> None:
        """Reseed from ``(seed, epoch, rank)``."""
        self._reseed(runner, EPOCH_TAG, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Reseed from ``(seed, global iteration, rank)``."""
        if self.per_iter:
            self._reseed(runner, ITER_TAG, runner.iter)

    def before_val_epoch(self, runner) -> None:
        """Reseed from ``(seed, epoch, rank)``, so validation draws the same numbers."""
        self._reseed(runner, EVAL_TAG, runner.epoch)

    def before_test_epoch(self, runner) -> None:
        """Reseed from ``(seed, epoch, rank)``, so testing draws the same numbers."""
        self._reseed(runner, EVAL_TAG, runner.epoch)
