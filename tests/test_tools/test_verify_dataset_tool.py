"""tools/misc/verify_dataset.py: exit 0 on a clean tree, 2 listing every bad file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmdmpt.testing import load_script, make_synthetic

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'misc' / 'verify_dataset.py'
RGBNT100_CONFIG = ROOT / 'configs' / '_base_' / 'datasets' / 'rgbnt100_bs128_128x256.py'


def _run(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env.pop('MMDMPT_DEBUG', None)
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope='module')
def tool():
    """The tool's module, for in-process runs of ``main``."""
    return load_script(TOOL)


@pytest.fixture(scope='module')
def person_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('tool') / 'RGBNT201'
    make_synthetic(
        str(root),
        layout='rgbnt201',
        num_ids=6,
        train_ids=3,
        samples_per_camera=1,
        height=64,
        width=32,
        seed=2,
    )
    return root


def _write_config(path, root):
    path.write_text(
        f"""default_scope = 'mmdmpt'
root = {str(root)!r}
pipeline = [dict(type='LoadMultiModalImages')]
train_dataloader = dict(
    batch_size=2, dataset=dict(type='RGBNT201', data_root=root, split='train', pipeline=pipeline)
)
val_dataloader = dict(
    batch_size=2, dataset=dict(type='RGBNT201', data_root=root, split='test', pipeline=pipeline)
)
test_dataloader = val_dataloader
"""
    )
    return path


def test_clean_tree_with_a_real_config_exits_0(tmp_path):
    # default tile size, so the config's tile_width=256 holds: strips 768 px wide
    root = tmp_path / 'RGBNT100'
    make_synthetic(str(root), layout='rgbnt100', num_ids=6, train_ids=3, samples_per_camera=2)
    options = [f'{k}_dataloader.dataset.data_root={root}' for k in ('train', 'val', 'test')]
    proc = _run(RGBNT100_CONFIG, '--num-workers', 2, '--cfg-options', *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    # val and test read the same dataset: checked once
    assert any(line.startswith('val, test ') for line in proc.stdout.splitlines())
    assert 'OK: 48 files in 2 split(s) load.' in proc.stdout
    assert '48/48' not in proc.stdout  # the progress bar is on stderr
    assert '24/24' in proc.stderr


def test_damaged_tree_exits_2_naming_every_bad_file(tmp_path, person_tree):
    import shutil

    root = tmp_path / 'damaged'
    shutil.copytree(person_tree, root)
    rgb = sorted((root / 'train_171' / 'RGB').iterdir())
    tir = sorted((root / 'test' / 'TI').iterdir())
    truncated, empty, text = rgb[0], rgb[1], tir[0]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty.write_bytes(b'')
    text.write_text('not an image')
    missing = root / 'train_171' / 'NI' / rgb[2].name
    missing.unlink()
    config = _write_config(tmp_path / 'cfg.py', root)
    proc = _run(config, '--no-progress')
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    for path, reason in (
        (truncated, 'truncated JPEG'),
        (empty, 'the file is empty'),
        (text, 'corrupt or not an image'),
        (missing, "missing 'nir' image"),
    ):
        assert f'{path}: {reason}' in proc.stdout
    assert '4 bad file(s):' in proc.stdout
    assert (
        "1 split(s) could not be listed:\n  [train] RGBNT201 split 'train': "
        f"missing 'nir' image {missing} "
    ) in proc.stdout
    assert 'elapsed:' not in proc.stderr  # --no-progress


def test_missing_config_is_a_user_error():
    proc = _run('configs/no_such_config.py')
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    assert 'config error' in proc.stderr
    assert 'config file not found: configs/no_such_config.py' in proc.stderr


def test_splits_option_checks_only_those(tool, tmp_path, person_tree, capsys):
    config = _write_config(tmp_path / 'cfg.py', person_tree)
    status = tool.run_tool(tool.main, [str(config), '--splits', 'test', '--no-progress'])
    out = capsys.readouterr().out
    assert status == 0
    rows = [line.split(' | ')[0].strip() for line in out.splitlines() if ' | ' in line]
    assert rows == ['split', 'test', 'all']
    # 'val' and 'test' (the same dataset config) are merged
    status = tool.run_tool(tool.main, [str(config), '--splits', 'test,val,test', '--no-progress'])
    out = capsys.readouterr().out
    rows = [line.split(' | ')[0].strip() for line in out.splitlines() if ' | ' in line]
    assert status == 0 and rows == ['split', 'test, val', 'all']


def test_config_problems_are_user_errors(tool, tmp_path, person_tree, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text(
        f"train_dataloader = dict(dataset=dict(type='RGBNT201', data_root={str(person_tree)!r}))\n"
    )
    assert tool.run_tool(tool.main, [str(config), '--splits', 'val']) == 2
    err = capsys.readouterr().err
    assert '--splits val: the config has no val_dataloader with a dataset' in err
    assert tool.run_tool(tool.main, [str(config), '--cfg-options', 'novalue']) == 2
    assert '--cfg-options novalue' in capsys.readouterr().err
    broken = tmp_path / 'broken.py'
    broken.write_text('train_dataloader = dict(\n')
    assert tool.run_tool(tool.main, [str(broken)]) == 2
    assert f'cannot read the config {broken}' in capsys.readouterr().err
    empty = tmp_path / 'empty.py'
    empty.write_text('x = 1\n')
    assert tool.run_tool(tool.main, [str(empty)]) == 2
    assert 'no train/val/test dataloader with a dataset to check' in capsys.readouterr().err


@pytest.mark.parametrize(
    'args, message',
    [
        (['--splits', 'train,bogus'], 'expected comma-separated names among train, val, test'),
        (['--num-workers', '0'], 'expected a positive integer'),
    ],
)
def test_bad_arguments_exit_2(tool, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        tool.main(['cfg.py', *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
