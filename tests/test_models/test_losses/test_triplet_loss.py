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


def _batch(seed=0, num_ids=8, per_id=4, dim=256):
    """Features of a P x K batch (margin 8 leaves most triplets active)."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_ids, dim, generator=gen)
    labels = torch.arange(num_ids).repeat_interleave(per_id)
    feats = centers[labels] + torch.randn(num_ids * per_id, dim, generator=gen)
    return feats, labels


def _naive_distance(feats):
    """The formula of pairwise_euclidean without disabling autocast."""
    sq = feats.pow(2).sum(1, keepdim=True)
    return (sq + sq.t() - 2.0 * feats @ feats.t()).clamp(min=1e-12).sqrt()


def _autocast_devices():
    params = [pytest.param('cpu', torch.bfloat16, id='cpu-bf16')]
    for dtype in (torch.float16, torch.bfloat16):
        params.append(
            pytest.param(
                'cuda',
                dtype,
                id=f'cuda-{str(dtype)[6:]}',
                marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA'),
            )
        )
    return params


@pytest.mark.parametrize('device,dtype', _autocast_devices())
@pytest.mark.parametrize('margin,normalize', [(None, False), (8.0, False), (None, True)])
def test_autocast_gives_the_fp32_loss(device, dtype, margin, normalize):
    feats, labels = _batch()
    feats, labels = feats.to(device), labels.to(device)
    loss_fn = TripletLoss(margin=margin, normalize_feature=normalize)
    ref_feats = feats.clone().requires_grad_(True)
    ref = loss_fn(ref_feats, labels)
    ref.backward()
    amp_feats = feats.clone().requires_grad_(True)
    with torch.autocast(device, dtype=dtype):
        loss = loss_fn(amp_feats, labels)
        naive = _naive_distance(F.normalize(feats, dim=1) if normalize else feats)
    loss.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(amp_feats.grad, ref_feats.grad, rtol=1e-5, atol=1e-8)
    # Without disabling autocast the distances are far from the fp32 ones
    # (the product runs in low precision), so this test can tell.
    assert naive.dtype == torch.float32  # the sum is fp32, the product was not
    exact = _naive_distance(F.normalize(feats, dim=1) if normalize else feats)
    assert (naive - exact).abs().max() > 1e-3 * exact.max()


def test_autocast_changes_mined_triplets_without_the_fix():
    # The hardest positive found from bf16 distances differs from the fp32 one
    # for some anchors of this batch: the low-precision loss is a different loss.
    feats, labels = _batch(seed=1, per_id=8, dim=768)
    same = labels[:, None] == labels[None, :]
    pos_mask = same & ~torch.eye(len(labels), dtype=torch.bool)
    exact = pairwise_euclidean(feats)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        naive = _naive_distance(feats)
        inside = pairwise_euclidean(feats)
    assert torch.equal(inside, exact)
    hardest = exact.masked_fill(~pos_mask, -1).argmax(1)
    hardest_naive = naive.masked_fill(~pos_mask, -1).argmax(1)
    assert (hardest != hardest_naive).any()


def test_pairwise_euclidean_promotes_half_inputs():
    feats = FEATS.to(torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        dist = pairwise_euclidean(feats)
    assert dist.dtype == torch.float32
    assert dist[1, 2].item() == pytest.approx(math.sqrt(10.0), rel=1e-6)
    assert pairwise_euclidean(FEATS.double()).dtype == torch.float64


def test_default_path_is_plain_fp32_arithmetic():
    # Outside autocast the loss is exactly the fp32 formula (no extra casts).
    feats, labels = _batch(seed=2)
    dist = _naive_distance(feats)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    d_ap = dist.masked_fill(~pos, float('-inf')).amax(1)
    d_an = dist.masked_fill(same, float('inf')).amin(1)
    assert torch.equal(TripletLoss()(feats, labels), F.softplus(d_ap - d_an).mean())
    assert torch.equal(TripletLoss(margin=8.0)(feats, labels), F.relu(d_ap - d_an + 8.0).mean())


def test_no_host_read_of_a_device_value():
    """The mean over anchors with a triplet is a masked sum: no item(), no boolean indexing."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name.split('::')[-1]
            if name == 'index' and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
            ):
                name = 'bool_index'
            self.names.append(name)
            return func(*args, **(kwargs or {}))

    feats = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])  # ids 2 and 3 have no positive
    ops = Ops()
    with ops:
        loss = TripletLoss()(feats, labels)
    assert not {'_local_scalar_dense', 'nonzero', 'is_nonzero', 'bool_index'} & set(ops.names)
    # The same value as the mean over the anchors with a triplet, computed by hand.
    dist = pairwise_euclidean(feats.detach())
    terms = []
    for i in range(4):
        pos = max(dist[i, j] for j in range(6) if labels[j] == labels[i] and j != i)
        neg = min(dist[i, j] for j in range(6) if labels[j] != labels[i])
        terms.append(F.softplus(pos - neg))
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad[:4].abs().sum() > 0
