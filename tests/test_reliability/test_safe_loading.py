"""Guarantee 1: checkpoints whose unpickling would run code are refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdmpt.apis import load_reid_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'tests' / 'data' / 'tiny_dmpt_rgbnt201.py'


def test_own_checkpoints_load_with_weights_only(tmp_path, make_runner):
    runner = make_runner(tmp_path, max_epochs=1)
    runner.train()
    ckpt = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert ckpt['meta']['epoch'] == 1


def test_the_crafted_checkpoint_really_runs_code(malicious_checkpoint):
    path, marker = malicious_checkpoint
    torch.load(path, weights_only=False)  # the unsafe path, on purpose
    assert marker.exists()


def test_runner_load_from_refuses_code(tmp_path, malicious_checkpoint, make_runner):
    path, marker = malicious_checkpoint
    runner = make_runner(tmp_path / 'w', load_from=str(path))
    with pytest.raises(RuntimeError, match='would execute pickled code') as info:
        runner.load_or_resume()
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_runner_resume_refuses_code(tmp_path, malicious_checkpoint, make_runner):
    path, marker = malicious_checkpoint
    runner = make_runner(tmp_path / 'w', load_from=str(path), resume=True)
    with pytest.raises(RuntimeError, match='would execute pickled code') as info:
        runner.train()
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_auto_resume_refuses_code(tmp_path, malicious_checkpoint, make_runner):
    path, marker = malicious_checkpoint
    work = tmp_path / 'w'
    work.mkdir()
    target = work / 'epoch_1.pth'
    target.write_bytes(path.read_bytes())
    (work / 'last_checkpoint').write_text(str(target))
    runner = make_runner(work, resume=True)
    with pytest.raises(RuntimeError, match=str(target)):
        runner.train()
    assert not marker.exists()


def test_apis_refuse_code(malicious_checkpoint, toy_model):
    path, marker = malicious_checkpoint
    with pytest.raises(RuntimeError, match='Refused to load') as info:
        load_reid_checkpoint(toy_model(), str(path))
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.slow
def test_tools_test_refuses_code(tmp_path, malicious_checkpoint):
    from mmdmpt.testing import make_synthetic

    path, marker = malicious_checkpoint
    root = tmp_path / 'RGBNT201'
    make_synthetic(
        str(root), layout='rgbnt201', num_ids=4, train_ids=2, samples_per_camera=1,
        height=64, width=32, seed=1,
    )  # fmt: skip
    opts = [f'{k}.dataset.data_root={root}' for k in ('train_dataloader', 'val_dataloader',
                                                      'test_dataloader')]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, 'tools/test.py', str(CONFIG), str(path), '--work-dir',
         str(tmp_path / 'work'), '--cfg-options', *opts],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'would execute pickled code' in result.stderr and str(path) in result.stderr
    assert not marker.exists()
