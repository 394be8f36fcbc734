"""Smoke test of benchmarks/onnx_infer.py with a tiny CLIP (layout only; timings mean nothing)."""

import json
from pathlib import Path

import pytest

from mmdmpt.testing import load_script

BENCH = Path(__file__).resolve().parents[2] / 'benchmarks' / 'onnx_infer.py'


def test_onnx_infer_tiny(tmp_path, capsys):
    module = load_script(BENCH)
    out = tmp_path / 'onnx_infer.json'
    argv = ['--tiny', '--steps', '1', '--warmup', '0', '--batch-sizes', '1', '2']
    module.main([*argv, '--threads', '1', '--ort-threads', '1', '--out', str(out)])
    data = json.loads(out.read_text())
    assert list(data['batches']) == ['1', '2']
    for entry in data['batches'].values():
        assert entry['max_abs_diff'] <= 1e-4  # both backends compute the same feature
        torch_sps = entry['pytorch']['samples_per_s']
        ort_sps = entry['onnxruntime']['samples_per_s']
        assert torch_sps > 0 and ort_sps > 0
        assert entry['ratio'] == pytest.approx(ort_sps / torch_sps)
    assert data['torch_threads'] == 1 and data['ort_threads'] == 1
    table = capsys.readouterr().out
    assert 'onnx_infer: tiny CLIP DMPT' in table and '| onnxruntime / PyTorch |' in table
