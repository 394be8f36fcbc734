"""Batch-hard triplet loss (soft margin or margin ranking)."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mmdmpt.registry import MODELS


def pairwise_euclidean(feats: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows, ``sqrt(clamp(d^2, 1e-12))``.

    Args:
        feats (Tensor): ``(N, D)``.

    Returns:
        Tensor: ``(N, N)``.
    """
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

    Anchors without another sample of their identity, or without any sample
    of another identity, have no triplet and are left out of the mean. When
    no anchor has a triplet the loss is a zero that stays connected to the
    graph (``0 * feats.sum()``), never NaN.

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
            raise ValueError(f'margin must be >= 0 or None, got {margin}')
        self.margin = margin
        self.loss_weight = loss_weight
        self.normalize_feature = normalize_feature

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Compute the weighted loss.

        Args:
            feats (Tensor): ``(N, D)`` features.
            labels (Tensor): ``(N,)`` identity labels.

        Returns:
            Tensor: Scalar loss.
        """
        if self.normalize_feature:
            feats = F.normalize(feats, dim=1)
        labels = labels.reshape(-1)
        dist = pairwise_euclidean(feats.float())
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask = same & ~eye
        neg_mask = ~same
        valid = pos_mask.any(1) & neg_mask.any(1)
        if not bool(valid.any()):
            return feats.sum() * 0.0
        d_ap = dist.masked_fill(~pos_mask, float('-inf')).amax(1)[valid]
        d_an = dist.masked_fill(~neg_mask, float('inf')).amin(1)[valid]
        if self.margin is None:
            loss = F.softplus(d_ap - d_an)
        else:
            loss = F.relu(d_ap - d_an + self.margin)
        return self.loss_weight * loss.mean()

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f'margin={self.margin}, loss_weight={self.loss_weight}'
