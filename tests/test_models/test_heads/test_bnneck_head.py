import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmpretrain.structures import DataSample

from mmdmpt.registry import MODELS
from mmdmpt.utils.errors import ConfigError

N, M, D, C = 6, 3, 8, 4
EPS = 1e-5  # BatchNorm1d's default eps


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


# ------------------------------------------------------ independent formulas
def _train_bn(x, weight):
    """BatchNorm in training mode, no shift: batch mean, biased batch variance."""
    x = x.double()
    mean = x.mean(0)
    var = ((x - mean) ** 2).mean(0)
    return ((x - mean) / torch.sqrt(var + EPS) * weight.double()).float()


def _smoothed_ce(logits, labels, eps=0.1):
    """Label-smoothed cross entropy, mean over samples, in float64.

    Target ``(1 - eps) * one_hot + eps / C`` (mmpretrain's 'original' mode).
    """
    logits = logits.detach().double()
    num = logits.shape[1]
    target = F.one_hot(torch.as_tensor(labels), num).double() * (1 - eps) + eps / num
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return float(-(target * log_p).sum(1).mean())


def _soft_margin_triplet(flat, labels):
    """Batch-hard soft-margin triplet loss with explicit loops, in float64."""
    x = flat.detach().double()
    terms = []
    for a in range(len(labels)):
        dists = [math.dist(x[a].tolist(), x[j].tolist()) for j in range(len(labels))]
        pos = [dists[j] for j in range(len(labels)) if labels[j] == labels[a] and j != a]
        neg = [dists[j] for j in range(len(labels)) if labels[j] != labels[a]]
        if pos and neg:
            terms.append(math.log1p(math.exp(max(pos) - min(neg))))
    return sum(terms) / len(terms)


# ---------------------------------------------------------------------- tests
def test_structure(mmdmpt_scope):
    head = _head(mmdmpt_scope)
    assert head.classifier.bias is None
    assert not head.bnneck.bias.requires_grad and head.bnneck.weight.requires_grad
    assert torch.equal(head.bnneck.bias, torch.zeros(M * D))
    assert torch.equal(head.bnneck.weight, torch.ones(M * D))
    assert [p.shape for p in head.classifier_parameters()] == [(C, M * D)]
    assert 0.0005 < head.classifier.weight.std().item() < 0.002  # classifier_std=0.001


def test_loss_values_and_keys(mmdmpt_scope):
    head = _head(mmdmpt_scope).train()
    with torch.no_grad():  # a non-trivial BNNeck scale
        head.bnneck.weight.copy_(torch.linspace(0.5, 1.5, M * D))
        head.classifier.weight.normal_(std=0.5)
    torch.manual_seed(1)
    feats = torch.randn(N, M, D, requires_grad=True)
    losses = head.loss(feats, _samples(LABELS))
    assert set(losses) == {'loss_cls', 'loss_triplet', 'acc_top1'}
    assert [k for k in losses if 'loss' in k] == ['loss_cls', 'loss_triplet']
    # ID loss: 0.25 x label-smoothed CE (eps 0.1) on the post-BN logits.
    flat = feats.detach().flatten(1)
    logits = _train_bn(flat, head.bnneck.weight.detach()) @ head.classifier.weight.detach().t()
    assert losses['loss_cls'].item() == pytest.approx(0.25 * _smoothed_ce(logits, LABELS), rel=1e-5)
    # Triplet (soft margin) on the pre-BN feature, not on the BN output.
    expected_triplet = _soft_margin_triplet(flat, LABELS)
    assert losses['loss_triplet'].item() == pytest.approx(expected_triplet, rel=1e-5)
    bn_triplet = _soft_margin_triplet(_train_bn(flat, head.bnneck.weight.detach()), LABELS)
    assert abs(bn_triplet - expected_triplet) > 1e-2  # the two choices differ here
    # Top-1 accuracy (percent) of the same logits.
    expected_acc = 100.0 * sum(int(i == j) for i, j in zip(logits.argmax(1).tolist(), LABELS)) / N
    assert losses['acc_top1'].item() == pytest.approx(expected_acc)
    # MMEngine sums only the 'loss' terms.
    total, log_vars = BaseModel.parse_losses(None, losses)
    assert total.item() == pytest.approx(
        (losses['loss_cls'] + losses['loss_triplet']).item(), rel=1e-6
    )
    assert log_vars['acc_top1'] == pytest.approx(expected_acc)
    total.backward()
    assert feats.grad.abs().sum() > 0
    assert head.bnneck.bias.grad is None
    assert head.bnneck.weight.grad.abs().sum() > 0


def test_losses_can_be_disabled(mmdmpt_scope):
    head = _head(mmdmpt_scope, loss_cls=None, loss_triplet=dict(type='TripletLoss', margin=3.0))
    feats = torch.randn(N, M, D)
    losses = head.loss(feats, _samples(LABELS))
    assert set(losses) == {'loss_triplet', 'acc_top1'}
    # margin ranking relu(d_ap - d_an + 3), mean over anchors
    x = feats.flatten(1).double()
    dist = torch.cdist(x, x)
    labels = torch.tensor(LABELS)
    same = labels[:, None] == labels[None, :]
    d_ap = dist.masked_fill(~same | torch.eye(N, dtype=torch.bool), -1).amax(1)
    d_an = dist.masked_fill(same, float('inf')).amin(1)
    expected = (d_ap - d_an + 3.0).clamp_min(0).mean().item()
    assert losses['loss_triplet'].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_per_modality_and_align_losses(mmdmpt_scope):
    head = _head(
        mmdmpt_scope,
        per_modality_loss=dict(weight=0.5),
        align_loss=dict(weight=0.1, mode='cosine'),
    ).train()
    with torch.no_grad():
        for clf in head.modality_classifiers:
            clf.weight.normal_(std=0.5)
    torch.manual_seed(1)
    feats = torch.randn(N, M, D, requires_grad=True)
    with pytest.raises(RuntimeError, match='init_alignment'):
        head.loss(feats, _samples(LABELS))
    proj, text = torch.randn(D, 5), torch.randn(M, 5)
    head.init_alignment(proj, text)
    masks = [[True, True, True]] * 4 + [[True, False, True]] * 2
    losses = head.loss(feats, _samples(LABELS, masks))
    assert {'loss_cls_modality', 'loss_align'} <= set(losses)
    # Per modality: BNNeck + classifier on the present samples' D features,
    # label-smoothed CE, mean over modalities, x 0.5.
    keep = torch.tensor(masks)
    labels = torch.tensor(LABELS)
    terms = []
    for m in range(M):
        x = _train_bn(feats.detach()[keep[:, m], m], head.modality_bnnecks[m].weight.detach())
        logits = x @ head.modality_classifiers[m].weight.detach().t()
        terms.append(_smoothed_ce(logits, labels[keep[:, m]]))
    assert losses['loss_cls_modality'].item() == pytest.approx(0.5 * sum(terms) / M, rel=1e-5)
    # Alignment by hand: mean over present (n, m) of 1 - cos(f @ proj, t_m), x 0.1.
    cos = F.cosine_similarity(feats @ proj, text.unsqueeze(0), dim=-1)
    assert torch.allclose(losses['loss_align'], 0.1 * (1 - cos)[keep].mean(), atol=1e-6)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for m in range(M):
        assert head.modality_classifiers[m].weight.grad.abs().sum() > 0
    assert len(list(head.classifier_parameters())) == 1 + M
    contrastive = _head(mmdmpt_scope, align_loss=dict(mode='contrastive', temperature=0.5))
    contrastive.init_alignment(proj, text)
    value = contrastive.loss(feats, _samples(LABELS))['loss_align']
    img = (feats @ proj).detach().double()
    img = img / img.norm(dim=-1, keepdim=True)
    txt = text.double() / text.double().norm(dim=-1, keepdim=True)
    logits = img @ txt.t() / 0.5  # (N, M, M): sample n, modality m, text j
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    expected = -log_p.diagonal(dim1=1, dim2=2).mean()  # target j = m
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_modality_skips_modalities_with_one_sample(mmdmpt_scope):
    head = _head(mmdmpt_scope, per_modality_loss=dict(weight=1.0)).train()
    feats = torch.randn(N, M, D)
    masks = [[True, True, True]] + [[True, False, True]] * (N - 1)  # modality 1: one sample
    value = head.loss(feats, _samples(LABELS, masks))['loss_cls_modality']
    labels = torch.tensor(LABELS)
    terms = []
    for m in (0, 2):
        x = _train_bn(feats[:, m], head.modality_bnnecks[m].weight.detach())
        terms.append(_smoothed_ce(x @ head.modality_classifiers[m].weight.detach().t(), labels))
    assert value.item() == pytest.approx(sum(terms) / 2, rel=1e-5)


def _eval_bn(x, bn):
    """BatchNorm in eval mode from the running statistics."""
    mean, var = bn.running_mean.double(), bn.running_var.double()
    out = (x.double() - mean) / torch.sqrt(var + EPS) * bn.weight.double() + bn.bias.double()
    return out.float()


def test_predict_and_test_feature(mmdmpt_scope):
    feats = torch.randn(N, M, D)
    masks = [[True, False, True]] + [[True, True, True]] * (N - 1)
    head = _head(mmdmpt_scope).eval()
    samples = head.predict(feats, _samples(LABELS, masks))
    assert len(samples) == N
    for i in range(N):  # raw pre-BN feature, not normalised
        assert torch.equal(samples[i].pred_feature, feats[i].flatten())
    after = _head(mmdmpt_scope, test_feature='after').eval()
    with torch.no_grad():  # a non-trivial BN in eval mode
        after.bnneck.running_mean.copy_(torch.linspace(-0.5, 0.5, M * D))
        after.bnneck.running_var.copy_(torch.linspace(0.5, 2.0, M * D))
        after.bnneck.weight.copy_(torch.linspace(0.8, 1.2, M * D))
    samples = after.predict(feats, _samples(LABELS, masks))
    expected = _eval_bn(feats.flatten(1), after.bnneck)
    for i in range(1, N):
        torch.testing.assert_close(samples[i].pred_feature, expected[i], rtol=1e-6, atol=1e-6)
    # sample 0: modality 1 absent -> its slice is zero, the others as above
    torch.testing.assert_close(samples[0].pred_feature[:D], expected[0, :D], rtol=1e-6, atol=1e-6)
    assert torch.equal(samples[0].pred_feature[D : 2 * D], torch.zeros(D))
    torch.testing.assert_close(samples[0].pred_feature[2 * D :], expected[0, 2 * D :])
    created = after.predict(feats)  # data samples created when absent
    assert len(created) == N and isinstance(created[0], DataSample)
    torch.testing.assert_close(created[0].pred_feature, expected[0], rtol=1e-6, atol=1e-6)


def test_losses_under_autocast_are_computed_in_fp32(mmdmpt_scope):
    """Under CPU bf16 autocast every loss is the fp32 loss of the network outputs.

    The BNNeck and the ID classifier run in fp32 (no bf16 weight copy), so the ID
    loss equals the fp32 one; the per-modality logits come out of their
    classifiers in bf16 (that is the network) and their loss must equal the fp32
    label-smoothed CE of those bf16 logits; the triplet and alignment losses the
    fp32 values on the fp32 features.
    """
    head = _head(
        mmdmpt_scope,
        per_modality_loss=dict(weight=0.5),
        align_loss=dict(weight=1.0, mode='contrastive', temperature=0.05),
    ).train()
    with torch.no_grad():
        head.classifier.weight.normal_(std=0.5)
        for clf in head.modality_classifiers:
            clf.weight.normal_(std=0.5)
    torch.manual_seed(2)
    feats = torch.randn(16, M, D)
    labels = [i // 4 for i in range(16)]
    proj, text = torch.randn(D, 32), torch.randn(M, 32)
    head.init_alignment(proj, text)
    samples = _samples(labels)
    ref = head.loss(feats, samples)  # no autocast: all fp32
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp = head.loss(feats, samples)
        # What the code did before: the loss modules applied under autocast.
        flat_bn = F.batch_norm(feats.flatten(1), None, None, head.bnneck.weight, None, True)
        logits = F.linear(flat_bn.bfloat16(), head.classifier.weight.bfloat16())
        naive_cls = head.loss_cls(logits, torch.tensor(labels))
        img = F.normalize(feats @ proj, dim=-1)
        naive_align = F.cross_entropy(
            (img @ F.normalize(text, dim=-1).t() / 0.05).reshape(-1, M), torch.arange(M).repeat(16)
        )
    assert logits.dtype == torch.bfloat16  # the network's output is low precision
    for key in ('loss_cls', 'loss_triplet', 'loss_cls_modality', 'loss_align'):
        assert amp[key].dtype == torch.float32, key
    # ID loss: the fp32 classifier's label-smoothed CE, as without autocast.
    expected_cls = ref['loss_cls'].item()
    assert expected_cls == pytest.approx(
        0.25 * _smoothed_ce(head.classifier(flat_bn), labels), rel=1e-6
    )
    assert amp['loss_cls'].item() == pytest.approx(expected_cls, rel=1e-6)
    assert abs(naive_cls.item() - expected_cls) > 1e-6 * expected_cls  # the trap is real
    # Per-modality: the same for each modality's bf16 logits.
    terms = []
    for m in range(M):
        x = F.batch_norm(feats[:, m], None, None, head.modality_bnnecks[m].weight, None, True)
        logits_m = F.linear(x.bfloat16(), head.modality_classifiers[m].weight.bfloat16())
        terms.append(_smoothed_ce(logits_m.float(), labels))
    assert amp['loss_cls_modality'].item() == pytest.approx(0.5 * sum(terms) / M, rel=1e-6)
    # Triplet and alignment: the fp32 values.
    torch.testing.assert_close(amp['loss_triplet'], ref['loss_triplet'], rtol=1e-6, atol=0)
    torch.testing.assert_close(amp['loss_align'], ref['loss_align'], rtol=1e-6, atol=0)
    rel = abs(naive_align.item() - ref['loss_align'].item()) / ref['loss_align'].item()
    assert rel > 1e-4  # low-precision projection and similarities would differ


def test_validation(mmdmpt_scope):
    with pytest.raises(ConfigError, match='test_feature'):
        _head(mmdmpt_scope, test_feature='middle')
    with pytest.raises(ConfigError, match='divisible'):
        _head(mmdmpt_scope, in_channels=25)
    # 'auto' left unresolved (a model built by hand without prepare_config): named, not a
    # TypeError from inside nn.Linear
    for bad in ('auto', 0, 2.5, True):
        with pytest.raises(ConfigError, match=r'num_classes=.*expected a positive integer'):
            _head(mmdmpt_scope, num_classes=bad)
    with pytest.raises(ConfigError, match='unknown keys'):
        _head(mmdmpt_scope, per_modality_loss=dict(weight=1.0, smooth=0.1))
    with pytest.raises(ConfigError, match="'cosine' or 'contrastive'"):
        _head(mmdmpt_scope, align_loss=dict(mode='l2'))
    head = _head(mmdmpt_scope)
    with pytest.raises(ValueError, match='in_channels'):
        head.loss(torch.randn(N, M, D + 1), _samples(LABELS))
    with pytest.raises(ValueError, match='labels for'):
        head.loss(torch.randn(N, M, D), _samples(LABELS[:-1]))
    with pytest.raises(ValueError, match='modality_mask'):
        head.predict(torch.randn(1, M, D), _samples([0], [[True, False]]))
