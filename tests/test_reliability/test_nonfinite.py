"""Guarantee 3: a non-finite loss never reaches the optimizer."""

import pytest
import torch

from mmdmpt.engine import NonFiniteCheckOptimWrapper


def _wrapper(**kwargs):
    return dict(type='NonFiniteCheckOptimWrapper', optimizer=dict(type='SGD', lr=0.1), **kwargs)


def test_nonfinite_loss_raises_naming_iteration_and_term(tmp_path, make_runner, toy_model):
    model = toy_model(nan_at=(3,))
    runner = make_runner(tmp_path, model=model, max_epochs=1, optim_wrapper=_wrapper())
    before = {}

    def keep(*_, **__):
        before.update({k: v.clone() for k, v in model.state_dict().items()})

    runner.train_loop.run_iter = _wrap_run_iter(runner.train_loop.run_iter, keep)
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    text = str(info.value)
    assert 'iteration 3' in text and 'loss_b=nan' in text and 'loss_a' not in text
    for key, value in model.state_dict().items():  # the bad step changed nothing
        assert torch.equal(value, before[key]) and torch.isfinite(value).all()


def _wrap_run_iter(run_iter, before):
    def wrapped(idx, data_batch):
        before()
        return run_iter(idx, data_batch)

    return wrapped


def test_nonfinite_loss_is_skipped_and_counted(tmp_path, make_runner, toy_model):
    model = toy_model(nan_at=(2, 5))
    runner = make_runner(
        tmp_path, model=model, max_epochs=2, optim_wrapper=_wrapper(on_nonfinite='skip')
    )
    runner.train()
    assert runner.optim_wrapper.skipped_steps == 2
    assert runner.message_hub.get_info('nonfinite_skipped_steps') == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert runner.iter == 8


def test_skip_stops_past_max_skips(tmp_path, make_runner, toy_model):
    model = toy_model(nan_at=(1, 2))
    wrapper = _wrapper(on_nonfinite='skip', max_skips=1)
    runner = make_runner(tmp_path, model=model, max_epochs=1, optim_wrapper=wrapper)
    with pytest.raises(FloatingPointError, match='max_skips=1'):
        runner.train()


def test_unit_without_runner_names_the_summed_loss():
    param = torch.nn.Parameter(torch.ones(2))
    wrapper = NonFiniteCheckOptimWrapper(optimizer=torch.optim.SGD([param], lr=1.0))
    with pytest.raises(FloatingPointError, match='summed loss'):
        wrapper.update_params((param * float('inf')).sum())
    assert torch.equal(param.detach(), torch.ones(2))
    with pytest.raises(ValueError, match='on_nonfinite'):
        NonFiniteCheckOptimWrapper(optimizer=torch.optim.SGD([param], lr=1.0), on_nonfinite='x')
