"""Normalise collated multi-modal batches on the device."""

from numbers import Number
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseDataPreprocessor

from mmdmpt.registry import MODELS
from mmdmpt.structures import check_modalities, stack_modality_mask
from mmdmpt.utils.errors import ConfigError

StatsType = Union[Number, Sequence[Number], Sequence[Sequence[Number]], Mapping[str, Sequence]]


def _triplet(value, what: str) -> List[float]:
    """A 3-value list from a number or a 1- / 3-sequence."""
    if isinstance(value, Number):
        return [float(value)] * 3
    values = [float(v) for v in value]
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ConfigError(
            f'data_preprocessor.{what} must be a number or hold 3 values (one per channel), '
            f'got {value}'
        )
    return values


@MODELS.register_module()
class MultiModalDataPreprocessor(BaseDataPreprocessor):
    """Cast, normalise and mask a batch of multi-modal images.

    Accepts the output of ``default_collate`` on
    :class:`~mmdmpt.datasets.PackMultiModalReIDInputs` samples, i.e.
    ``{'inputs': uint8 tensor (N, M, 3, H, W), 'data_samples': [...]}``, or
    ``inputs`` as a list of ``(M, 3, H, W)`` tensors of one shape. The batch
    is moved to the device, cast to float, normalised per modality as
    ``(x - mean) / std``, and absent modalities (``modality_mask`` False in
    a sample's metainfo) are set to exactly zero.

    Args:
        mean (number | Sequence | Mapping): Channel means (0-255 scale): one
            number or one 3-sequence for every modality, a list of M
            3-sequences (one per modality, in the batch's modality order),
            or a dict modality -> 3-sequence. Defaults to 127.5.
        std (number | Sequence | Mapping): Channel stds, same forms as
            ``mean``. Defaults to 127.5.
        modalities (Sequence[str], optional): The expected modality order;
            when given, batches must have ``len(modalities)`` modalities and
            samples declaring ``modalities`` must match it. Needed to order
            dict statistics unless samples carry ``modalities``. Defaults to
            None.
        non_blocking (bool): Non-blocking host-to-device copies. Defaults to
            False.
    """

    def __init__(
        self,
        mean: StatsType = 127.5,
        std: StatsType = 127.5,
        modalities: Optional[Sequence[str]] = None,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(non_blocking=non_blocking)
        if modalities is not None:
            modalities = check_modalities(modalities, 'data_preprocessor.modalities')
        self.modalities = modalities
        mean_t, self._mean_keys = self._parse_stats(mean, 'mean')
        std_t, self._std_keys = self._parse_stats(std, 'std')
        if (std_t <= 0).any():
            raise ConfigError(f'data_preprocessor.std: std values must be positive, got {std}')
        # (K, 3): K = 1 (shared), M (per position) or len(dict) (per name).
        self.register_buffer('mean', mean_t, persistent=False)
        self.register_buffer('std', std_t, persistent=False)

    def _parse_stats(self, value: StatsType, what: str) -> Tuple[torch.Tensor, Optional[tuple]]:
        if isinstance(value, Mapping):
            keys = check_modalities(tuple(value), f'data_preprocessor.{what} (its keys)')
            rows = [_triplet(value[k], f'{what}[{k!r}]') for k in keys]
            return torch.tensor(rows, dtype=torch.float32), keys
        if isinstance(value, Number) or (
            len(value) in (1, 3) and all(isinstance(v, Number) for v in value)
        ):
            return torch.tensor([_triplet(value, what)], dtype=torch.float32), None
        rows = [_triplet(v, f'{what}[{i}]') for i, v in enumerate(value)]
        if self.modalities is not None and len(rows) != len(self.modalities):
            raise ConfigError(
                f'{what} holds {len(rows)} per-modality entries but modalities='
                f'{self.modalities} has {len(self.modalities)} (data_preprocessor.{what}); '
                'expected one entry per modality'
            )
        return torch.tensor(rows, dtype=torch.float32), None

    def _rows(self, stats: torch.Tensor, keys: Optional[tuple], modalities, m: int, what: str):
        """(1 or M, 3) statistics for a batch of M modalities."""
        if keys is None:
            if stats.shape[0] not in (1, m):
                raise ConfigError(
                    f'{what} holds {stats.shape[0]} per-modality entries but the batch has '
                    f'{m} modalities; set data_preprocessor.{what} to one entry per modality '
                    'the dataset yields (dataset.modalities)'
                )
            return stats
        if modalities is None:
            raise ConfigError(
                f'{what} is given per modality name {keys} but neither the preprocessor '
                '(modalities=...) nor the data samples (metainfo "modalities") give the order'
            )
        missing = [name for name in modalities if name not in keys]
        if missing:
            raise ConfigError(
                f'{what} has no entry for modalities {missing} (it has {keys}); add them to '
                f'data_preprocessor.{what}'
            )
        return stats[[keys.index(name) for name in modalities]]

    def forward(self, data: dict, training: bool = False) -> Dict[str, object]:
        """Normalise a collated batch.

        Args:
            data (dict): ``inputs`` (uint8 tensor ``(N, M, 3, H, W)`` or a list
                of ``(M, 3, H, W)`` tensors) and ``data_samples`` (list, may be
                missing or None).
            training (bool): Unused. Defaults to False.

        Returns:
            dict: ``inputs`` (float32 ``(N, M, 3, H, W)`` on the device) and
            ``data_samples`` (on the device).
        """
        if not isinstance(data, Mapping) or 'inputs' not in data:
            raise ValueError(
                'MultiModalDataPreprocessor expects a dict with "inputs" (and '
                f'"data_samples"), got {type(data).__name__}'
            )
        inputs = data['inputs']
        data_samples = data.get('data_samples')
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError('MultiModalDataPreprocessor: "inputs" is an empty list')
            shapes = {tuple(t.shape) for t in inputs}
            if len(shapes) != 1:
                raise ValueError(
                    'MultiModalDataPreprocessor: the (M, 3, H, W) inputs of a batch must share '
                    f'one shape, got {sorted(shapes)}'
                )
            inputs = torch.stack(list(inputs))
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 5 or inputs.shape[2] != 3:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs)
            raise ValueError(
                'MultiModalDataPreprocessor: inputs must be (N, M, 3, H, W) (or a list of '
                f'(M, 3, H, W)), got {shape}'
            )
        n, m = inputs.shape[:2]
        if self.modalities is not None and m != len(self.modalities):
            raise ConfigError(
                f'MultiModalDataPreprocessor: batch has {m} modalities but modalities='
                f'{self.modalities} (data_preprocessor.modalities); expected the same '
                'modalities as the dataset (dataset.modalities)'
            )
        if data_samples is not None and len(data_samples) != n:
            raise ValueError(
                f'MultiModalDataPreprocessor: {len(data_samples)} data samples for a batch of {n}'
            )

        modalities = self.modalities
        for sample in data_samples or []:
            declared = sample.metainfo.get('modalities')
            if declared is not None:
                declared = tuple(declared)
                if modalities is None:
                    modalities = declared
                elif declared != modalities:
                    raise ConfigError(
                        f'MultiModalDataPreprocessor: sample modalities {declared} differ from '
                        f'{modalities}; expected data_preprocessor.modalities and '
                        'dataset.modalities to be the same names in the same order'
                    )
        if modalities is not None and len(modalities) != m:
            raise ValueError(
                f'MultiModalDataPreprocessor: batch has {m} modalities but samples declare '
                f'{modalities}'
            )
        try:
            mask = stack_modality_mask(data_samples, n, m)
        except ValueError as exc:
            raise ValueError(f'MultiModalDataPreprocessor: {exc}') from None

        mean = self._rows(self.mean, self._mean_keys, modalities, m, 'mean')
        std = self._rows(self.std, self._std_keys, modalities, m, 'std')
        inputs = self.cast_data(inputs).float()
        inputs = (inputs - mean.view(1, -1, 3, 1, 1)) / std.view(1, -1, 3, 1, 1)
        if mask is not None and not bool(mask.all()):
            inputs = inputs.masked_fill(~mask.to(inputs.device).view(n, m, 1, 1, 1), 0.0)
        if data_samples is not None:
            data_samples = self.cast_data(data_samples)
        return {'inputs': inputs, 'data_samples': data_samples}
