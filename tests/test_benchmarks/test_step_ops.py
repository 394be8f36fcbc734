"""The CPU targets of a training step (issue 16), held by deterministic operator counts.

``benchmarks/step_ops.py`` counts what one training step dispatches (ViT-B/16
layout at width 64, bf16 autocast as on a GPU); the counts do not depend on the
machine's speed or load, so the targets are asserted here. The counter itself
is checked on hand-made cases first, so that a zero below means something.
"""

import json
from pathlib import Path

import torch

from mmdmpt.testing import load_script

ROOT = Path(__file__).resolve().parents[2]


def _step_ops():
    return load_script(ROOT / 'benchmarks' / 'step_ops.py')


def test_counter_sees_casts_syncs_copies_and_saved_weight_copies():
    step_ops = _step_ops()
    model = torch.nn.Linear(4, 3)
    model.weight.requires_grad_(False)  # frozen weight, trainable bias
    x = torch.randn(5, 4, requires_grad=True)
    counter = step_ops.StepCounter(model)
    saved = {}
    with counter, counter.in_phase('forward'), counter.saved_hooks(saved):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = model(x)  # autocast casts x, the frozen weight and the bias
        z = y.float().sum()
    assert counter.frozen_casts == 1 and counter.trainable_casts == 1
    assert sum(saved.values()) == 3 * 4 * 2  # d(x) needs the weight's bf16 copy: kept
    with counter, counter.in_phase('update'):
        z.backward()
        flag = x.grad.abs().sum() > 0
        assert bool(flag)  # _local_scalar_dense
        picked = x.detach()[x.detach()[:, 0] > 0]  # boolean-mask indexing
        copy = x.detach().clone()
    assert counter.syncs[('update', '_local_scalar_dense')] == 1
    assert counter.syncs[('update', 'index')] == 1
    assert picked.shape[1] == 4 and copy.shape == x.shape
    assert counter.copies >= 4  # 3 casts, clone (+ the backward's casts)
    assert counter.ops['addmm'] == 1 and counter.views > 0


def test_counter_sees_no_cast_of_a_weight_already_in_bf16():
    step_ops = _step_ops()
    frozen = torch.nn.Linear(4, 4).requires_grad_(False).to(torch.bfloat16)
    x = torch.randn(5, 4, requires_grad=True)
    counter = step_ops.StepCounter(frozen)
    saved = {}
    with counter, counter.in_phase('forward'), counter.saved_hooks(saved):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            frozen(x).sum()
    assert counter.frozen_casts == 0 and sum(saved.values()) == 0
    assert counter.copies == 1  # only x is cast


def test_training_step_holds_the_cpu_targets(tmp_path, capsys):
    out = tmp_path / 'step_ops.json'
    data = _step_ops().main(['--out', str(out)])
    assert json.loads(out.read_text()) == data
    dmpt, full = data['dmpt'], data['full_ft']
    assert dmpt['ops'] <= 950, dmpt['top_ops']
    assert dmpt['copies'] <= 150, dmpt['top_ops']
    assert dmpt['weight_casts_per_forward'] == 0
    assert dmpt['host_syncs'] == 0, dmpt['host_sync_ops']
    assert dmpt['saved_weight_copy_mb'] == 0
    assert dmpt['matmul_flop_ratio'] <= 0.72
    assert dmpt['check_syncs'] == 1  # the deferred non-finite check reads one flag
    # The same counter sees what mixed precision costs full fine-tuning: its fp32
    # master weights are cast every forward and the casts are kept for backward.
    assert full['trainable_casts_per_forward'] > 100
    assert full['saved_weight_copy_mb'] > 0
    assert full['matmul_flop_ratio'] == 1.0
    assert dmpt['ops'] < full['ops']
    assert '| dmpt ' in capsys.readouterr().out
