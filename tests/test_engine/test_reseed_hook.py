import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmdmpt.engine.hooks.reseed_hook as module
from mmdmpt.engine.hooks import ReseedHook
from mmdmpt.registry import HOOKS
from mmdmpt.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def _runner(seed=0, epoch=0, it=0, sampler=None):
    return SimpleNamespace(
        seed=seed, epoch=epoch, iter=it, train_dataloader=SimpleNamespace(sampler=sampler)
    )


def test_registered_and_in_the_default_runtime():
    assert HOOKS.get('ReseedHook') is ReseedHook
    cfg = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'default_runtime.py'))
    assert dict(type='ReseedHook') in cfg.custom_hooks
    assert ReseedHook.priority == 'VERY_HIGH'
    with pytest.raises(ConfigError, match="per_iter must be a bool, got 'yes'"):
        ReseedHook(per_iter='yes')


def test_epoch_reseed_depends_on_seed_epoch_and_rank_only(monkeypatch):
    hook = ReseedHook()
    hook.before_train_epoch(_runner(seed=0, epoch=2))
    first = _draws()
    _draws()  # whatever happened in between ...
    hook.before_train_epoch(_runner(seed=0, epoch=2))
    assert _draws() == first  # ... is forgotten
    hook.before_train_epoch(_runner(seed=0, epoch=3))
    assert _draws() != first
    hook.before_train_epoch(_runner(seed=1, epoch=2))
    assert _draws() != first
    monkeypatch.setattr(module, 'get_rank', lambda: 1)
    hook.before_train_epoch(_runner(seed=0, epoch=2))
    assert _draws() != first


def test_iteration_reseed_uses_the_global_iteration():
    hook = ReseedHook()
    hook.before_train_iter(_runner(epoch=0, it=5), batch_idx=5)
    first = _draws()
    hook.before_train_iter(_runner(epoch=1, it=5), batch_idx=0)
    assert _draws() == first
    hook.before_train_iter(_runner(it=6), batch_idx=6)
    assert _draws() != first
    # Neither an epoch nor an evaluation stream coincides with it.
    hook.before_train_epoch(_runner(epoch=5))
    assert _draws() != first
    hook.before_val_epoch(_runner(epoch=5))
    val = _draws()
    assert val != first
    hook.before_test_epoch(_runner(epoch=5))
    assert _draws() == val
    # Off: the streams go on.
    random.seed(3)
    expected = random.random()
    random.seed(3)
    ReseedHook(per_iter=False).before_train_iter(_runner(it=5), batch_idx=5)
    assert random.random() == expected


def test_no_seed_means_no_reseed():
    random.seed(3)
    expected = random.random()
    random.seed(3)
    ReseedHook().before_train_epoch(_runner(seed=None))
    assert random.random() == expected


def test_a_sampler_built_with_a_replaced_seed_gets_the_resumed_one():
    sampler = SimpleNamespace(seed=1234)
    runner = _runner(seed=1234, sampler=sampler)
    hook = ReseedHook()
    hook.after_load_checkpoint(runner, {})
    runner.seed = 77  # a resume took the checkpoint's seed
    hook.before_train(runner)
    assert sampler.seed == 77
    # A sampler with its own seed, or a load that kept the seed: untouched.
    own = SimpleNamespace(seed=5)
    runner = _runner(seed=1234, sampler=own)
    hook = ReseedHook()
    hook.after_load_checkpoint(runner, {})
    runner.seed = 77
    hook.before_train(runner)
    assert own.seed == 5
    kept = SimpleNamespace(seed=1234)
    runner = _runner(seed=1234, sampler=kept)
    hook = ReseedHook()
    hook.after_load_checkpoint(runner, {})
    hook.before_train(runner)
    assert kept.seed == 1234
    ReseedHook().before_train(_runner(sampler=kept))  # nothing loaded: nothing to do
    assert kept.seed == 1234
