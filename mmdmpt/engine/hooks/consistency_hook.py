"""Checks, before any step runs, that the model and the data fit together."""

from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop

from mmdmpt.registry import HOOKS
from mmdmpt.utils.errors import ConfigError


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _metainfo(dataloader) -> dict:
    dataset = getattr(dataloader, 'dataset', None)
    return dict(getattr(dataset, 'metainfo', None) or {})


@HOOKS.register_module()
class DataModelCheckHook(Hook):
    """Stop at start-up when the config's model and data disagree.

    Before training: the classifier size must equal the number of training
    identities, the model's modalities must equal those of the training set
    and of the validation set (same names, same order; checked here so that a
    bad ``val_dataloader`` fails before the first epoch, not after it), and an
    identity sampler's ``batch_size`` must equal the dataloader's. Before
    validation and testing: the modalities must match. Each failure names the
    config key, its value and what was expected.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        """Check the training set against the model and the sampler."""
        model = _unwrap(runner.model)
        loader = runner.train_dataloader
        meta = _metainfo(loader)
        self._check_modalities(model, meta, 'train_dataloader')
        val_loop = getattr(runner, '_val_loop', None)
        if isinstance(val_loop, BaseLoop):  # built by Runner.train() before this hook
            self._check_modalities(
                model, _metainfo(getattr(val_loop, 'dataloader', None)), 'val_dataloader'
            )
        num_ids = meta.get('num_ids')
        head_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
        if num_ids is not None and head_classes is not None and head_classes != num_ids:
            raise ConfigError(
                f'model.head.num_classes={head_classes} but the training set '
                f'({meta.get("dataset_name", "train_dataloader.dataset")}, split '
                f'{meta.get("split", "train")!r}) has {num_ids} identities: set '
                f'model.head.num_classes={num_ids}.'
            )
        sampler = getattr(loader, 'sampler', None)
        sampler_batch = getattr(sampler, 'batch_size', None)
        if sampler_batch is not None and loader.batch_size != sampler_batch:
            raise ConfigError(
                f'train_dataloader.batch_size={loader.batch_size} but '
                f'train_dataloader.sampler.batch_size={sampler_batch}: the P x K sampler '
                'forms batches of its own batch_size, so the two must be equal.'
            )

    def before_val(self, runner) -> None:
        """Check the validation set's modalities."""
        self._check_modalities(
            _unwrap(runner.model), _metainfo(runner.val_dataloader), 'val_dataloader'
        )

    def before_test(self, runner) -> None:
        """Check the test set's modalities."""
        self._check_modalities(
            _unwrap(runner.model), _metainfo(runner.test_dataloader), 'test_dataloader'
        )

    @staticmethod
    def _check_modalities(model, meta: dict, key: str) -> None:
        data_modalities: Optional[Sequence[str]] = meta.get('modalities')
        backbone = getattr(model, 'backbone', None)
        model_modalities: Optional[Sequence[str]] = getattr(backbone, 'modalities', None)
        if data_modalities is None or model_modalities is None:
            return
        if tuple(data_modalities) != tuple(model_modalities):
            raise ConfigError(
                f'model.backbone.modalities={tuple(model_modalities)} but '
                f'{key}.dataset yields modalities {tuple(data_modalities)}: they must be the '
                f'same names in the same order (set {key}.dataset.modalities or '
                'model.backbone.modalities).'
            )
