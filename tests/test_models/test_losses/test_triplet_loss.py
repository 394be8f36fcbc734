import math

import pytest
import torch
import torch.nn.functional as F

from mmdmpt.models.losses import TripletLoss, pairwise_euclidean

FEATS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 5.0]])
LABELS = torch.tensor([0, 0, 1, 1])
# Hardest positive / negative per anchor, by hand:
#   a0: d(0,1)=1, min(d(0,2)=3, d(0,3)=5)=3           -> 1 - 3 = -2
#   a1: d(1,0)=1, min(sqrt(10), sqrt(26))=sqrt(10)    -> 1 - sqrt(10)
#   a2: d(2,3)=2, min(d(2,0)=3, d(2,1)=sqrt(10))=3    -> 2 - 3 = -1
#   a3: d(3,2)=2, min(d(3,0)=5, d(3,1)=sqrt(26))=5    -> 2 - 5 = -3
DIFFS = [-2.0, 1.0 - math.sqrt(10.0), -1.0, -3.0]


def test_distances():
    dist = pairwise_euclidean(FEATS)
    assert torch.allclose(dist[1, 2], torch.tensor(math.sqrt(10.0)))
    assert torch.allclose(dist.diagonal(), torch.full((4,), 1e-6), atol=1e-6)


def test_soft_margin_by_hand():
    loss = TripletLoss(margin=None, loss_weight=1.0)(FEATS, LABELS)
    expected = sum(math.log1p(math.exp(d)) for d in DIFFS) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    weighted = TripletLoss(margin=None, loss_weight=0.5)(FEATS, LABELS)
    assert weighted.item() == pytest.approx(0.5 * expected, rel=1e-5)


def test_margin_by_hand():
    loss = TripletLoss(margin=2.5)(FEATS, LABELS)
    expected = sum(max(0.0, d + 2.5) for d in DIFFS) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert TripletLoss(margin=0.3)(FEATS, LABELS).item() == 0.0


def test_normalize_feature():
    loss = TripletLoss(normalize_feature=True)(FEATS + 0.1, LABELS)
    ref = TripletLoss()(F.normalize(FEATS + 0.1, dim=1), LABELS)
    assert torch.allclose(loss, ref)


def test_anchor_without_positive_is_skipped():
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])  # anchor 0 has no positive
    loss = TripletLoss(margin=None)(feats, labels)
    # a1: ap = d(1,2) = sqrt(10), an = d(1,0) = 1; a2: ap = sqrt(10), an = d(2,0) = 3
    expected = (
        math.log1p(math.exp(math.sqrt(10) - 1)) + math.log1p(math.exp(math.sqrt(10) - 3))
    ) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(feats.grad).all()


@pytest.mark.parametrize('labels', [[0, 1, 2, 3], [5, 5, 5, 5]])
def test_no_valid_triplet_gives_zero_without_nan(labels):
    feats = torch.randn(4, 8, requires_grad=True)
    loss = TripletLoss()(feats, torch.tensor(labels))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_identical_features_have_finite_gradients():
    feats = torch.zeros(4, 8, requires_grad=True)
    loss = TripletLoss()(feats, LABELS)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_negative_margin_rejected():
    with pytest.raises(ValueError, match='margin'):
        TripletLoss(margin=-1.0)
