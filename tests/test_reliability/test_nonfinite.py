"""Guarantee 3: a non-finite loss never reaches the optimizer, by default and under AMP."""

import re
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper
from torch.utils._python_dispatch import TorchDispatchMode

from mmdmpt.engine import NonFiniteCheckOptimWrapper
from mmdmpt.engine.optim_wrappers import AmpNonFiniteCheckOptimWrapper, NonFiniteCheckMixin
from mmdmpt.testing import load_script
from mmdmpt.utils.errors import ConfigError

nan = float('nan')


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
    with pytest.raises(ValueError, match='optim_wrapper.on_nonfinite'):
        NonFiniteCheckOptimWrapper(optimizer=torch.optim.SGD([param], lr=1.0), on_nonfinite='x')


# --------------------------------------------------------------------------- #
# The check is on by default: configs, tools/train.py --amp, the AMP wrapper
# --------------------------------------------------------------------------- #
def _tiny():
    return load_script(
        Path(__file__).with_name('tiny_train.py'), 'mmdmpt_tests_reliability_tiny_train'
    )


ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(
    str(p.relative_to(ROOT))
    for p in [*(ROOT / 'configs').rglob('*.py'), *(ROOT / 'tests' / 'data').glob('*.py')]
    if '_base_' not in p.parts
)


def test_every_config_checks_by_default():
    assert len(CONFIGS) >= 9
    for path in CONFIGS:
        wrapper = Config.fromfile(ROOT / path).optim_wrapper
        assert wrapper.type == 'NonFiniteCheckOptimWrapper', path
        assert wrapper.get('on_nonfinite', 'raise') == 'raise', path


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return _tiny().make_tree(str(tmp_path_factory.mktemp('nonfinite') / 'RGBNT201'))


def _trainable(runner):
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@pytest.mark.parametrize(
    'option, iteration, term',
    [
        # a config value that makes one loss term NaN from the first step
        ('model.head.loss_triplet.loss_weight=nan', 1, r'loss_triplet=nan'),
        # divergence: a huge learning rate blows the weights up at the first step
        ('optim_wrapper.optimizer.lr=1e30', 2, r'loss_\w+=(nan|inf|-inf)'),
    ],
)
def test_default_config_raises_naming_iteration_and_term(tree, tmp_path, option, iteration, term):
    tiny = _tiny()
    runner = tiny.build_runner(tiny.build_cfg(tree, tmp_path, [option], ['--no-validate']))
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    text = str(info.value)
    assert f'Non-finite loss at iteration {iteration} (epoch 1): loss term(s) ' in text
    assert re.search(term, text), text
    assert runner.iter == iteration - 1  # the bad step was not taken
    assert all(torch.isfinite(p).all() for p in _trainable(runner).values())


def test_default_config_skip_mode_counts(tree, tmp_path):
    tiny = _tiny()
    options = [
        'model.head.loss_triplet.loss_weight=nan',
        'optim_wrapper.on_nonfinite=skip',
        'train_cfg.max_epochs=1',
    ]
    runner = tiny.build_runner(tiny.build_cfg(tree, tmp_path, options, ['--no-validate']))
    before = {}
    runner.train_loop.run_iter = _wrap_run_iter(
        runner.train_loop.run_iter, lambda: before or before.update(_trainable(runner))
    )
    runner.train()
    iters = runner.iter
    assert iters == len(runner.train_dataloader) > 1  # every step ran and was skipped
    assert runner.optim_wrapper.skipped_steps == iters
    assert runner.message_hub.get_info('nonfinite_skipped_steps') == iters
    after = _trainable(runner)
    assert before and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step reached the weights


def test_amp_flag_keeps_the_check(tree, tmp_path, monkeypatch):
    tiny = _tiny()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = tiny.build_cfg(tree, tmp_path, flags=['--amp'])
    assert cfg.optim_wrapper.type == 'AmpNonFiniteCheckOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic' and cfg.optim_wrapper.on_nonfinite == 'raise'
    cfg = tiny.build_cfg(tree, tmp_path, ['optim_wrapper.type=OptimWrapper'], ['--amp'])
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    cfg = tiny.build_cfg(tree, tmp_path, ['optim_wrapper.type=mmdmpt.NonFiniteCheckOptimWrapper'])
    tiny.train_tool().use_amp(cfg)
    assert cfg.optim_wrapper.type == 'mmdmpt.AmpNonFiniteCheckOptimWrapper'
    with pytest.raises(ConfigError, match=r"--amp: optim_wrapper.type='MyWrapper' has no known"):
        tiny.build_cfg(tree, tmp_path, ['optim_wrapper.type=MyWrapper'], ['--amp'])
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ConfigError, match='--amp: mixed precision needs a CUDA GPU'):
        tiny.build_cfg(tree, tmp_path, flags=['--amp'])


@pytest.fixture
def amp_wrapper(monkeypatch):
    """``make(**kw)``: the AMP wrapper on one parameter, built on any machine.

    Without CUDA, MMEngine's device assertion is patched and the GradScaler disables
    itself (scale 1, a plain step): the check itself is device-independent.
    """
    if not torch.cuda.is_available():
        import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module

        monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)

    def make(**kwargs):
        param = torch.nn.Parameter(torch.ones(2))
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # "CUDA is not available. Disabling" (CPU)
            wrapper = AmpNonFiniteCheckOptimWrapper(
                optimizer=torch.optim.SGD([param], lr=1.0), **kwargs
            )
        return wrapper, param

    return make


def test_amp_wrapper_raises_on_a_nonfinite_loss(amp_wrapper):
    wrapper, param = amp_wrapper()
    assert isinstance(wrapper, AmpOptimWrapper) and isinstance(wrapper, NonFiniteCheckMixin)
    wrapper.loss_terms_getter = lambda: {'loss_cls': torch.tensor(1.0), 'loss_x': torch.tensor(nan)}
    with pytest.raises(FloatingPointError, match=r'loss term\(s\) loss_x=nan\. Training stopped'):
        wrapper.update_params((param * nan).sum())
    assert torch.equal(param.detach(), torch.ones(2))
    wrapper.update_params((param * 2).sum())  # a finite loss steps as AmpOptimWrapper does
    assert torch.equal(param.detach(), -torch.ones(2))
    with pytest.raises(ValueError, match=r"optim_wrapper.on_nonfinite='x' is not supported"):
        amp_wrapper(on_nonfinite='x')


def test_amp_wrapper_skip_mode_counts(amp_wrapper):
    wrapper, param = amp_wrapper(on_nonfinite='skip', max_skips=1)
    wrapper.update_params((param * float('inf')).sum())
    assert wrapper.skipped_steps == 1 and torch.equal(param.detach(), torch.ones(2))
    assert param.grad is None or not param.grad.any()
    with pytest.raises(FloatingPointError, match='max_skips=1'):
        wrapper.update_params((param * nan).sum())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_wrapper_on_cuda(dtype):
    # gradients that overflow only once scaled are the GradScaler's business (the step is
    # skipped and the scale lowered, no error); a non-finite loss is ours
    model = torch.nn.Linear(4, 1).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper = AmpNonFiniteCheckOptimWrapper(optimizer=optimizer, dtype=dtype)
    x = torch.full((2, 4), 0.01, device='cuda')

    def step(factor):
        before = model.weight.detach().clone()
        with wrapper.optim_context(model):
            out = model(x)
        assert out.dtype == getattr(torch, dtype)
        wrapper.update_params(out.float().mean() * factor)
        return not torch.equal(before, model.weight.detach())

    # a plain step (scaled by 65536 at first: d loss / d bias = 0.1 keeps fp16 in range)
    assert step(0.1)
    scale = wrapper.loss_scaler.get_scale()
    assert not step(1e35)  # finite loss, infinite scaled gradients: the scaler skips
    assert wrapper.loss_scaler.get_scale() < scale
    with pytest.raises(FloatingPointError, match=r'the summed loss \(nan\)'):
        step(nan)
    assert step(0.1) and torch.isfinite(model.weight).all()


# --------------------------------------------------------------------------- #
# The check on the device (fused optimizers, the schedules' default): no host
# read during the step, the optimizer skips the update itself
# --------------------------------------------------------------------------- #
class _HostReads(TorchDispatchMode):
    """Count the operators that read a tensor's value on the host."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name.split('::')[-1] in ('_local_scalar_dense', 'is_nonzero', 'nonzero'):
            self.reads += 1
        return func(*args, **(kwargs or {}))


def _fused_wrapper(**kwargs):
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param], lr=0.1, fused=True)
    return NonFiniteCheckOptimWrapper(optimizer=optimizer, **kwargs), param


def test_default_schedules_use_a_fused_optimizer():
    for path in sorted((ROOT / 'configs' / '_base_' / 'schedules').glob('*.py')):
        assert Config.fromfile(path).optim_wrapper.optimizer.get('fused') is True, path


def test_device_check_skips_the_update_on_the_device_and_raises():
    wrapper, param = _fused_wrapper()
    assert wrapper.uses_device_check()
    wrapper.update_params((param * 2).sum())  # a finite step
    after_one = param.detach().clone()
    assert not torch.equal(after_one, torch.ones(2))
    state = {k: v.clone() for k, v in wrapper.optimizer.state[param].items()}
    with pytest.raises(FloatingPointError, match=r'summed loss \(nan\)\. Training stopped; the'):
        wrapper.update_params((param * nan).sum())
    assert torch.equal(param.detach(), after_one)  # weights, moments and step count unchanged
    for key, value in wrapper.optimizer.state[param].items():
        assert torch.equal(value, state[key]), key
    assert param.grad is None
    wrapper.update_params((param * 2).sum())  # and training can go on
    assert wrapper.optimizer.state[param]['step'].item() == 2


def test_device_check_reads_one_flag_and_only_when_asked(monkeypatch):
    wrapper, param = _fused_wrapper(on_nonfinite='skip', max_skips=1)
    wrapper.deferred_check = True  # as ReIDRunner sets it
    wrapper.loss_terms_getter = lambda: {'loss_a': torch.tensor(1.0), 'loss_b': torch.tensor(nan)}
    counter = _HostReads()
    with counter:
        wrapper.update_params((param * 2).sum())
    assert counter.reads == 0
    wrapper.check_pending()  # the Runner, once per iteration
    before = param.detach().clone()
    with counter:
        wrapper.update_params((param * nan).sum())  # no error yet: nothing was read
    assert counter.reads == 0
    assert torch.equal(param.detach(), before) and wrapper.skipped_steps == 0
    records = []
    monkeypatch.setattr(
        'mmdmpt.engine.optim_wrappers.print_log', lambda msg, **kw: records.append(msg)
    )
    with counter:
        wrapper.check_pending()
    assert counter.reads >= 1 and wrapper.skipped_steps == 1
    assert 'loss term(s) loss_b=nan' in records[0] and 'step skipped' in records[0]
    wrapper.check_pending()  # read once
    assert wrapper.skipped_steps == 1
    wrapper.update_params((param * nan).sum())
    with pytest.raises(FloatingPointError, match='max_skips=1'):
        wrapper.check_pending()


def test_amp_device_check_joins_the_grad_scaler(amp_wrapper, monkeypatch):
    """A non-finite loss whose gradients are finite still skips the AMP step."""
    if not torch.cuda.is_available():
        import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module

        monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    param = torch.nn.Parameter(torch.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        wrapper = AmpNonFiniteCheckOptimWrapper(
            optimizer=torch.optim.Adam([param], lr=0.1, fused=True)
        )
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=8.0)  # an enabled scaler
    assert wrapper.uses_device_check() and wrapper.loss_scaler.is_enabled()
    wrapper.update_params((param * 2).sum())
    after_one = param.detach().clone()
    assert not torch.equal(after_one, torch.ones(2))
    scale = wrapper.loss_scaler.get_scale()
    with pytest.raises(FloatingPointError, match=r'summed loss \(nan\)'):
        wrapper.update_params((param * 2).sum() + torch.tensor(nan))  # finite gradients
    assert torch.equal(param.detach(), after_one)
    assert wrapper.loss_scaler.get_scale() < scale


def test_amp_runner_keeps_the_frozen_tower_in_the_amp_dtype(tree, tmp_path, monkeypatch):
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module

    tiny = _tiny()
    for dtype, expected in ((None, torch.float16), ('bfloat16', torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        options = [] if dtype is None else [f'optim_wrapper.dtype={dtype}']
        cfg = tiny.build_cfg(tree, tmp_path / str(dtype), options, ['--amp', '--no-validate'])
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
        runner = tiny.build_runner(cfg)
        monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
        assert wrapper.deferred_check
        backbone = runner.model.backbone
        assert backbone.compute_dtype == expected
        frozen = [p for p in backbone.visual.parameters() if not p.requires_grad]
        assert frozen and all(p.dtype == expected for p in frozen)
        assert all(p.dtype == torch.float32 for p in runner.model.parameters() if p.requires_grad)
