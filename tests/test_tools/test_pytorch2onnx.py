"""tools/deployment/pytorch2onnx.py: export + parity check, its failure and its user errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdmpt.testing import load_script
from mmdmpt.utils.cli import run_tool

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py'
MASKS = ('rgb+nir+tir', 'rgb+nir', 'rgb+tir', 'nir+tir', 'rgb', 'nir', 'tir')


def _load(name, path):
    return load_script(path, name)


common = _load('mmdmpt_tests_apis_common', ROOT / 'tests' / 'test_apis' / 'common.py')
tool = _load('mmdmpt_tool_pytorch2onnx', TOOL)


@pytest.fixture(scope='module', autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny config whose test data are absent, two checkpoints of it, a real tree."""
    base = tmp_path_factory.mktemp('onnx_tool')
    cfg = common.tiny_config(str(base / 'no_data' / 'RGBNT201'), bind=True, log_level='WARNING')
    cfg.model.head.test_feature = 'after'
    cfg_file = str(base / 'tiny.py')
    cfg.dump(cfg_file)
    ckpts = [
        common.save_checkpoint(common.build_model(cfg, seed=s), str(base / f'ckpt{s}.pth'))
        for s in (1, 2)
    ]
    tree = common.make_tree(str(base / 'tree' / 'RGBNT201'))
    return dict(base=base, cfg_file=cfg_file, ckpts=ckpts, tree=tree)


@pytest.fixture(scope='module')
def exported(setup):
    """The tool in a subprocess: fixed batch of 2, real images from a synthetic set it writes."""
    out = str(setup['base'] / 'tiny.onnx')
    cmd = [sys.executable, str(TOOL), setup['cfg_file'], setup['ckpts'][0]]
    cmd += ['--output-file', out, '--batch-size', '2']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    return dict(proc=proc, out=out)


def _diffs(text, source):
    """max abs diff per mask from the printed table's rows of ``source``."""
    rows = re.findall(rf'^\| {source} \| ([a-z+]+) \| (\d+) \| ([0-9.e+-]+) \|', text, re.M)
    return {mask: float(diff) for mask, _, diff in rows}


def test_export_and_check_on_every_mask(exported):
    proc = exported['proc']
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert 'images float32 (2, 3, 3, 64, 32) RGB 0-255' in text
    assert 'output: feature float32 (2, 192)' in text
    assert 'Real images: a synthetic RGBNT201 set' in text
    for source in ('random', 'real'):
        diffs = _diffs(text, source)
        assert set(diffs) == set(MASKS) | {'mixed'}, text
        assert max(diffs.values()) <= 1e-4
    assert re.search(r'^OK: every max abs difference <= 0.0001', text, re.M)
    assert Path(exported['out']).is_file()


def test_check_only_fails_against_other_weights(exported, setup, capsys):
    """The file of checkpoint 1 does not reproduce checkpoint 2: exit 1, not a user error."""
    assert exported['proc'].returncode == 0
    argv = [setup['cfg_file'], setup['ckpts'][1], '--output-file', exported['out']]
    argv += ['--check-only', '--data-root', setup['tree'], '--num-samples', '4']
    assert run_tool(tool.main, argv) == 1
    captured = capsys.readouterr()
    assert "Real images: the config's test set (RGBNT201" in captured.out
    assert 'parity check failed: max abs difference' in captured.err
    assert 'do not deploy it' in captured.err
    rows = [{'max_abs_diff': 1e-6}, {'max_abs_diff': float('nan')}, {'max_abs_diff': 1.0}]
    assert max(rows, key=tool.badness) is rows[1]  # a NaN is the worst, not skipped


def test_check_only_passes_with_its_own_weights(exported, setup, capsys):
    argv = [setup['cfg_file'], setup['ckpts'][0], '--output-file', exported['out']]
    argv += ['--check-only', '--data-root', setup['tree'], '--num-samples', '4']
    assert run_tool(tool.main, argv) == 0
    assert max(_diffs(capsys.readouterr().out, 'real').values()) <= 1e-4


@pytest.mark.parametrize(
    'extra, message',
    [
        (['--opset', '11'], 'opset 11 (--opset) is not supported'),
        (['--output-file', 'x.pt'], '(--output-file) must end in .onnx, got x.pt'),
        (['--dynamic-batch', '--batch-size', '2'], 'cannot go with --dynamic-batch'),
        (['--check-only', '--output-file', 'absent.onnx'], 'no ONNX file at absent.onnx'),
        (['--ckpt', 'missing.pth'], 'missing.pth'),
        (['--config', 'missing.py'], 'config file not found: missing.py'),
    ],
)
def test_user_errors_exit_2(setup, capsys, extra, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, ckpt = setup['cfg_file'], setup['ckpts'][0]
    if extra[0] == '--ckpt':
        ckpt, extra = extra[1], []
    elif extra[0] == '--config':
        config, extra = extra[1], []
    argv = [config, ckpt, '--output-file', 'model.onnx', *extra]
    assert run_tool(tool.main, argv, tool='pytorch2onnx.py') == 2
    err = capsys.readouterr().err
    assert message in err and '--debug' in err
    assert not (tmp_path / 'model.onnx').exists()
