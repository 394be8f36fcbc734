"""Smoke tests of the cost benchmarks with a tiny CLIP (layout of the JSON only).

Timings of these runs mean nothing and are never asserted on.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmdmpt.testing import load_script

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / 'benchmarks'
FAST = ['--tiny', '--steps', '1', '--warmup', '0', '--batch-size', '4', '--threads', '1']


def _load(name):
    return load_script(BENCH / f'{name}.py')


def _check_layout(data, variants, base):
    assert list(data) == list(variants)
    for name in variants:
        entry = data[name]
        assert isinstance(entry['step_s'], float) and entry['step_s'] > 0
        assert isinstance(entry['peak_mb'], float) and entry['peak_mb'] > 0
        assert entry['threads'] == 1
    assert data[base]['step_ratio'] == pytest.approx(1.0)
    assert data[base]['peak_ratio'] == pytest.approx(1.0)


def test_train_cost_json(tmp_path, capsys):
    out = tmp_path / 'train.json'
    _load('train_cost').main([*FAST, '--in-process', '--out', str(out)])
    data = json.loads(out.read_text())
    _check_layout(data, ('dmpt', 'dmpt_cp', 'full_ft'), 'full_ft')
    assert data['dmpt']['trainable_params'] < data['full_ft']['trainable_params']
    table = capsys.readouterr().out
    assert '| dmpt_cp ' in table and 'vs full_ft' in table


def test_infer_cost_json(tmp_path, capsys):
    out = tmp_path / 'infer.json'
    _load('infer_cost').main([*FAST, '--in-process', '--out', str(out)])
    data = json.loads(out.read_text())
    _check_layout(data, ('dmpt', 'frozen_backbone'), 'frozen_backbone')
    assert '| frozen_backbone ' in capsys.readouterr().out


def test_bf16_autocast_runs_on_cpu(tmp_path):
    out = tmp_path / 'train.json'
    _load('train_cost').main(
        [*FAST, '--in-process', '--amp', 'bf16', '--variants', 'dmpt', '--out', str(out)]
    )
    assert list(json.loads(out.read_text())) == ['dmpt']


@pytest.mark.slow
def test_variants_run_in_child_processes(tmp_path):
    out = tmp_path / 'train.json'
    cmd = [sys.executable, str(BENCH / 'train_cost.py'), *FAST, '--batch-size', '2']
    cmd += ['--variants', 'dmpt', 'full_ft', '--out', str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert list(data) == ['dmpt', 'full_ft']
    assert data['dmpt']['peak_mb'] > data['dmpt']['after_build_mb'] * 0.5


def test_bench_utils_helpers():
    bu = _load('bench_utils')
    assert bu.median([3.0, 1.0, 2.0]) == 2.0
    assert bu.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert bu._strip_out(['--a', '1', '--out', 'x.json', '--out=y', '--b']) == ['--a', '1', '--b']
    table = bu.format_table(['a', 'bb'], [['1', '2'], ['333', '4']])
    assert table.splitlines()[0] == '| a   | bb |'
    assert bu.peak_rss_mb() > 0


def test_gpu_check_script_parses():
    proc = subprocess.run(['bash', '-n', str(BENCH / 'gpu_check.sh')], capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_tensor_memory_accounts_for_weights_and_saved_tensors(tmp_path, capsys):
    out = tmp_path / 'mem.json'
    _load('tensor_memory').main([*FAST, '--steps', '2', '--in-process', '--out', str(out)])
    data = json.loads(out.read_text())
    assert list(data) == ['dmpt', 'dmpt_cp', 'full_ft']
    for entry in data.values():
        # Weights are live from the build on; a step holds weights + saved tensors.
        assert entry['after_build_mb'] >= entry['weights_mb'] > 0
        assert entry['step_peak_mb'] >= entry['weights_mb'] + entry['saved_mb'] * 0.99
    # Checkpointing keeps only the blocks' inputs; full fine-tuning adds the
    # weights' gradients and Adam's two moments (3 x the trainable weights).
    assert data['dmpt_cp']['saved_mb'] < data['dmpt']['saved_mb']
    full = data['full_ft']
    trainable_mb = full['trainable_params'] * 4 / 2**20
    assert full['step_peak_mb'] >= full['weights_mb'] + 3 * trainable_mb * 0.99
    assert data['full_ft']['step_peak_ratio'] == pytest.approx(1.0)
    assert 'saved for backward' in capsys.readouterr().out


def test_tensor_memory_refuses_a_gpu_device():
    with pytest.raises(SystemExit):
        _load('tensor_memory').parse_args(['--device', 'cuda'])
