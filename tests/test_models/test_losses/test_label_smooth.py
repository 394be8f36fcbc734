"""LabelSmoothCrossEntropy: MMPretrain's LabelSmoothLoss value, without a host read."""

import pytest
import torch
from mmengine.registry import MODELS as MMENGINE_MODELS
from torch.utils._python_dispatch import TorchDispatchMode

from mmdmpt.models.losses import LabelSmoothCrossEntropy
from mmdmpt.utils.errors import ConfigError


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name.split('::')[-1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('eps', [0.0, 0.1, 0.3])
def test_equals_mmpretrain_label_smooth_loss(mmdmpt_scope, eps):
    import mmpretrain.models  # noqa: F401  (registers LabelSmoothLoss)

    theirs = MMENGINE_MODELS.build(
        dict(type='mmpretrain.LabelSmoothLoss', label_smooth_val=eps, loss_weight=0.25)
    )
    ours = LabelSmoothCrossEntropy(label_smooth_val=eps, loss_weight=0.25)
    torch.manual_seed(0)
    logits = (3 * torch.randn(12, 7)).requires_grad_()
    labels = torch.randint(0, 7, (12,))
    a, b = ours(logits, labels), theirs(logits, labels)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    (ga,) = torch.autograd.grad(a, logits)
    (gb,) = torch.autograd.grad(b, logits)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)
    if eps:  # the smoothing is real: plain cross entropy differs
        plain = 0.25 * torch.nn.functional.cross_entropy(logits, labels)
        assert abs(plain.item() - a.item()) > 1e-4


def test_no_host_read_and_fp32_under_autocast():
    loss = LabelSmoothCrossEntropy()
    logits, labels = torch.randn(6, 5).bfloat16(), torch.tensor([0, 1, 2, 3, 4, 0])
    ops = _Ops()
    with ops, torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(logits, labels)
    assert value.dtype == torch.float32
    assert not {'_local_scalar_dense', 'nonzero', 'aminmax'} & set(ops.names), ops.names
    with pytest.raises(ConfigError, match='label_smooth_val'):
        LabelSmoothCrossEntropy(label_smooth_val=1.0)
