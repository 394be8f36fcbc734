"""Batch-hard triplet loss (soft margin or margin ranking)."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mmdmpt.registry import MODELS
from mmdmpt.utils.errors import ConfigError

from ..utils.misc import autocast_off


def pairwise_euclidean(feats: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows, ``sqrt(clamp(d^2, 1e-12))``.

    Computed with autocast disabled; float16/bfloat16 inputs are promoted to
    float32, other dtypes are kept.

    Args:
        feats (Tensor): ``(N, D)``.

    Returns:
        Tensor: ``(N, N)``.
    """
    with autocast_off(feats.device):
        if feats.dtype in (torch.float16, torch.bfloat16):
            feats = feats.float()
        sq = feats.pow(2).sum(1, keepdim=True)
        dist = sq + sq.t() - 2.0 * feats @ feats.t()
        return dist.clamp(min=1e-12).sqrt()


@MODELS.register_module()
class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al., 2017).

    For every anchor the hardest positive (largest distance, same identity,
    the anchor itself excluded) and the hardest negative (smallest distance,
    other identity) are mined in the batch. With ``margin=None`` the soft
    margin ``softplus(d_ap - d_an)`` is used, otherwise
    ``relu(d_ap - d_an + margin)``.

    The loss is computed in float32 with autocast disabled (the features are
    cast to float32 first), so under mixed precision the distances, hence
    the mined triplets, are those of the float32 features.

    Anchors without another sample of their identity, or without any sample
    of another identity, have no triplet and are left out of the mean. When
    no anchor has a triplet the loss is a zero that stays connected to the
    graph, never NaN. The loss reads no device value on the host (no
    ``item()``, no boolean-mask indexing): the mean over the anchors with a
    triplet is a masked sum divided by their count.

    Args:
        margin (float, optional): Margin; None for the soft margin.
            Defaults to None.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        normalize_feature (bool): L2-normalise features before the
            distances. Defaults to False.
    """

    def __init__(
        self,
        *,
        margin: Optional[float] = None,
        loss_weight: float = 1.0,
        normalize_feature: bool = False,
    ) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise ConfigError(f'TripletLoss: margin must be >= 0 or None, got {margin}')
        self.margin = margin
        self.loss_weight = loss_weight
        self.normalize_feature = normalize_feature

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Compute the weighted loss.

        Args:
            feats (Tensor): ``(N, D)`` features, any floating dtype.
            labels (Tensor): ``(N,)`` identity labels.

        Returns:
            Tensor: Scalar float32 loss.
        """
        labels = labels.reshape(-1)
        with autocast_off(feats.device):
            feats = feats.float()
            if self.normalize_feature:
                feats = F.normalize(feats, dim=1)
            dist = pairwise_euclidean(feats)
            same = labels.unsqueeze(0) == labels.unsqueeze(1)
            eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
            pos_mask = same & ~eye
            neg_mask = ~same
            valid = pos_mask.any(1) & neg_mask.any(1)
            # Hardest positive / negative; anchors without one get 0 - 0 (masked out
            # below, and finite, so that no inf or NaN reaches the gradients).
            d_ap = dist.masked_fill(~pos_mask, 0.0).amax(1)
            d_an = dist.masked_fill(~neg_mask, float('inf')).amin(1)
            diff = torch.where(valid, d_ap - d_an.masked_fill(~valid, 0.0), 0.0)
            if self.margin is None:
                loss = F.softplus(diff)
            else:
                loss = F.relu(diff + self.margin)
            count = valid.sum().clamp(min=1)
            return self.loss_weight * (loss * valid).sum() / count

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f'margin={self.margin}, loss_weight={self.loss_weight}'
