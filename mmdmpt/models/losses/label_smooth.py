"""Label-smoothing cross entropy that reads no device value on the host."""

import torch
import torch.nn.functional as F
from torch import nn

from mmdmpt.registry import MODELS
from mmdmpt.utils.errors import ConfigError

from ..utils.misc import autocast_off


@MODELS.register_module()
class LabelSmoothCrossEntropy(nn.Module):
    """Cross entropy with label smoothing (Szegedy et al., 2016), the ID loss.

    ``loss_weight * mean_i [(1 - eps) * -log p_i[y_i] + eps / K * sum_k -log p_i[k]]``
    for ``K`` classes: the value of MMPretrain's ``LabelSmoothLoss`` in its
    ``'original'`` mode (target ``(1 - eps) * one_hot + eps / K``), computed by
    ``F.cross_entropy(label_smoothing=eps)`` in float32 with autocast off.
    Unlike that loss it checks the labels on the device only (MMPretrain's
    asserts ``labels.max().item() < K``, a host-device sync every step).

    Args:
        label_smooth_val (float): ``eps`` in ``[0, 1)``. Defaults to 0.1.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, *, label_smooth_val: float = 0.1, loss_weight: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= float(label_smooth_val) < 1.0:
            raise ConfigError(
                f'LabelSmoothCrossEntropy: label_smooth_val must be in [0, 1), got '
                f'{label_smooth_val}'
            )
        self.label_smooth_val = float(label_smooth_val)
        self.loss_weight = loss_weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Compute the weighted loss.

        Args:
            logits (Tensor): ``(N, K)`` class scores, any floating dtype.
            labels (Tensor): ``(N,)`` class indices.

        Returns:
            Tensor: Scalar float32 loss.
        """
        with autocast_off(logits.device):
            loss = F.cross_entropy(
                logits.float(), labels.reshape(-1).long(), label_smoothing=self.label_smooth_val
            )
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f'label_smooth_val={self.label_smooth_val}, loss_weight={self.loss_weight}'
