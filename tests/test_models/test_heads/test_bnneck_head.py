import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmpretrain.structures import DataSample

from mmdmpt.registry import MODELS

N, M, D, C = 6, 3, 8, 4


def _samples(labels, masks=None):
    samples = []
    for i, label in enumerate(labels):
        sample = DataSample().set_gt_label(int(label))
        if masks is not None:
            sample.set_metainfo(dict(modality_mask=torch.tensor(masks[i])))
        samples.append(sample)
    return samples


def _head(mmdmpt_scope, **kwargs):
    cfg = dict(type='BNNeckHead', in_channels=M * D, num_classes=C, num_modalities=M)
    cfg.update(kwargs)
    torch.manual_seed(0)
    return MODELS.build(cfg)


LABELS = [0, 0, 1, 1, 2, 2]


def test_structure(mmdmpt_scope):
    head = _head(mmdmpt_scope)
    assert head.classifier.bias is None
    assert not head.bnneck.bias.requires_grad and head.bnneck.weight.requires_grad
    assert torch.equal(head.bnneck.bias, torch.zeros(M * D))
    assert [p.shape for p in head.classifier_parameters()] == [(C, M * D)]


def test_loss_values_and_keys(mmdmpt_scope):
    head = _head(mmdmpt_scope).train()
    feats = torch.randn(N, M, D, requires_grad=True)
    losses = head.loss(feats, _samples(LABELS))
    assert set(losses) == {'loss_cls', 'loss_triplet', 'acc_top1'}
    assert [k for k in losses if 'loss' in k] == ['loss_cls', 'loss_triplet']
    # ID loss: 0.25 x label-smoothed CE (eps 0.1) on the post-BN logits.
    flat = feats.flatten(1)
    logits = head.classifier(F.batch_norm(flat, None, None, head.bnneck.weight, None, True))
    target = F.one_hot(torch.tensor(LABELS), C).float() * 0.9 + 0.1 / C
    expected = 0.25 * (-(target * logits.log_softmax(1)).sum(1)).mean()
    assert torch.allclose(losses['loss_cls'], expected, atol=1e-6)
    # Triplet on the pre-BN feature.
    triplet = MODELS.build(dict(type='TripletLoss'))(flat, torch.tensor(LABELS))
    assert torch.allclose(losses['loss_triplet'], triplet)
    assert 0.0 <= losses['acc_top1'].item() <= 100.0
    # MMEngine sums only the 'loss' terms.
    total, log_vars = BaseModel.parse_losses(None, losses)
    assert torch.allclose(total, losses['loss_cls'] + losses['loss_triplet'])
    assert 'acc_top1' in log_vars
    total.backward()
    assert feats.grad.abs().sum() > 0
    assert head.bnneck.bias.grad is None


def test_losses_can_be_disabled(mmdmpt_scope):
    head = _head(mmdmpt_scope, loss_cls=None, loss_triplet=dict(type='TripletLoss', margin=0.3))
    losses = head.loss(torch.randn(N, M, D), _samples(LABELS))
    assert set(losses) == {'loss_triplet', 'acc_top1'}


def test_per_modality_and_align_losses(mmdmpt_scope):
    head = _head(
        mmdmpt_scope,
        per_modality_loss=dict(weight=0.5),
        align_loss=dict(weight=0.1, mode='cosine'),
    ).train()
    feats = torch.randn(N, M, D, requires_grad=True)
    with pytest.raises(RuntimeError, match='init_alignment'):
        head.loss(feats, _samples(LABELS))
    proj, text = torch.randn(D, 5), torch.randn(M, 5)
    head.init_alignment(proj, text)
    masks = [[True, True, True]] * 4 + [[True, False, True]] * 2
    losses = head.loss(feats, _samples(LABELS, masks))
    assert {'loss_cls_modality', 'loss_align'} <= set(losses)
    # Alignment by hand: mean over present (n, m) of 1 - cos(f @ proj, t_m), x 0.1.
    cos = F.cosine_similarity(feats @ proj, text.unsqueeze(0), dim=-1)
    keep = torch.tensor(masks)
    assert torch.allclose(losses['loss_align'], 0.1 * (1 - cos)[keep].mean(), atol=1e-6)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for m in range(M):
        assert head.modality_classifiers[m].weight.grad.abs().sum() > 0
    assert len(list(head.classifier_parameters())) == 1 + M
    contrastive = _head(mmdmpt_scope, align_loss=dict(mode='contrastive', temperature=0.5))
    contrastive.init_alignment(proj, text)
    value = contrastive.loss(feats, _samples(LABELS))['loss_align']
    logits = F.normalize(feats @ proj, dim=-1) @ F.normalize(text, dim=-1).t() / 0.5
    expected = F.cross_entropy(logits.reshape(-1, M), torch.arange(M).repeat(N))
    assert torch.allclose(value, expected, atol=1e-6)


def test_predict_and_test_feature(mmdmpt_scope):
    feats = torch.randn(N, M, D)
    masks = [[True, False, True]] + [[True, True, True]] * (N - 1)
    head = _head(mmdmpt_scope).eval()
    samples = head.predict(feats, _samples(LABELS, masks))
    assert len(samples) == N
    assert samples[0].pred_feature.shape == (M * D,)
    assert torch.equal(samples[1].pred_feature, feats[1].flatten())  # raw, not normalised
    after = _head(mmdmpt_scope, test_feature='after').eval()
    after.bnneck.running_mean.fill_(0.3)  # a non-trivial BN in eval mode
    samples = after.predict(feats, _samples(LABELS, masks))
    expected = after.bnneck(feats.flatten(1))
    assert torch.allclose(samples[1].pred_feature, expected[1])
    assert torch.equal(samples[0].pred_feature[D : 2 * D], torch.zeros(D))
    created = after.predict(feats)  # data samples created when absent
    assert len(created) == N and isinstance(created[0], DataSample)


def test_validation(mmdmpt_scope):
    with pytest.raises(ValueError, match='test_feature'):
        _head(mmdmpt_scope, test_feature='middle')
    with pytest.raises(ValueError, match='divisible'):
        _head(mmdmpt_scope, in_channels=25)
    head = _head(mmdmpt_scope)
    with pytest.raises(ValueError, match='in_channels'):
        head.loss(torch.randn(N, M, D + 1), _samples(LABELS))
    with pytest.raises(ValueError, match='modality_mask'):
        head.predict(torch.randn(1, M, D), _samples([0], [[True, False]]))
