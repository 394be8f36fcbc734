"""tools/dataset_converters/make_synthetic.py as users run it: start-up, user errors."""

import os
import os.path as osp
import subprocess
import sys
import time

import pytest

from mmdmpt.datasets import WMVeID863, wmveid863
from mmdmpt.testing import load_script, synthetic
from mmdmpt.utils.errors import ConfigError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'dataset_converters', 'make_synthetic.py')
HEAVY = ('torch', 'mmengine', 'mmcv', 'mmpretrain', 'cv2', 'numpy')


def _tool_module():
    return load_script(TOOL)


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, TOOL, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=env,
    )


def _env_without_debug():
    env = dict(os.environ)
    env.pop('MMDMPT_DEBUG', None)
    return env


def test_layout_names_match_the_library():
    tool = _tool_module()
    assert tool.LAYOUTS == synthetic.LAYOUTS
    assert tool.WMVEID863_LAYOUTS == synthetic.WMVEID863_LAYOUTS
    assert tool.WMVEID863_LAYOUTS == tuple(wmveid863.WMVEID863_LAYOUTS)


def test_help_is_fast_and_imports_nothing_heavy():
    start = time.perf_counter()
    result = _run('--help')
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert '--wmveid863-layout {id_folders,flat,id_folders_gallery}' in result.stdout
    assert '--debug' in result.stdout
    assert elapsed < 1.0, f'--help took {elapsed:.2f} s'
    # the reason it is fast: parsing imports neither torch nor the OpenMMLab stack
    code = (
        'import importlib.util, sys\n'
        f'spec = importlib.util.spec_from_file_location("t", {TOOL!r})\n'
        'm = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n'
        'm.parse_args(["--layout", "wmveid863", "--out", "x"])\n'
        f'print(sorted(k for k in {HEAVY!r} if k in sys.modules))\n'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


def test_occupied_out_is_a_user_error(tmp_path):
    out = tmp_path / 'data'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    result = _run('--layout', 'wmveid863', '--out', str(out), env=_env_without_debug())
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert result.stderr.startswith('make_synthetic.py: config error\n')
    assert f"--out {out} already exists and is not empty (it holds ['notes.txt'])" in (
        result.stderr
    )
    assert 'pass --overwrite' in result.stderr
    assert sorted(os.listdir(out)) == ['notes.txt']


def test_bad_count_is_a_user_error_with_traceback_on_debug(tmp_path):
    args = ('--layout', 'rgbnt201', '--out', str(tmp_path / 'new'), '--num-ids', '1')
    result = _run(*args, env=_env_without_debug())
    assert result.returncode == 2
    assert '--num-ids must be >= 2, got 1' in result.stderr
    assert 'Traceback' not in result.stderr
    debug = _run(*args, '--debug', env=_env_without_debug())
    assert debug.returncode == 1
    assert 'Traceback' in debug.stderr and 'ConfigError: --num-ids must be >= 2' in debug.stderr
    assert not osp.exists(tmp_path / 'new')


@pytest.mark.parametrize(
    'args, message',
    [
        (['--samples-per-camera', '1'], '--samples-per-camera must be >= 2 for wmveid863'),
        (['--train-ids', '0'], '--train-ids as a count must be >= 1, got 0'),
        (['--train-ids', '1.5'], r'--train-ids as a fraction must be in \(0, 1\), got 1.5'),
        (['--num-ids', '6', '--train-ids', '6'], '--train-ids 6 leaves no test id'),
        (['--height', '16'], '--height must be >= 32, got 16'),
        (['--quality', '0'], '--quality must be in 1..100, got 0'),
        (['--family-size', '0'], '--family-size must be >= 1, got 0'),
        # only the generator can tell: 0.99 of 6 ids leaves no whole family to test
        (['--num-ids', '6', '--train-ids', '0.99'], 'refused the arguments: train_ids=0.99'),
    ],
)
def test_bad_values_are_config_errors(tmp_path, args, message):
    tool = _tool_module()
    with pytest.raises(ConfigError, match=message):
        tool.main(['--layout', 'wmveid863', '--out', str(tmp_path / 'new'), *args])


def test_wmveid863_layout_only_with_wmveid863(tmp_path):
    tool = _tool_module()
    with pytest.raises(ConfigError, match='--wmveid863-layout only applies to --layout wmveid863'):
        tool.main(['--layout', 'msvr310', '--wmveid863-layout', 'flat', '--out', str(tmp_path)])
    with pytest.raises(SystemExit) as info:  # argparse: unknown choice, status 2
        tool.parse_args(['--layout', 'wmveid863', '--wmveid863-layout', 'gallery', '--out', 'x'])
    assert info.value.code == 2


def test_writes_the_flat_layout(tmp_path, capsys):
    tool = _tool_module()
    out = str(tmp_path / 'WMVeID863')
    small = ['--num-ids', '6', '--train-ids', '3', '--samples-per-camera', '2']
    small += ['--height', '32', '--width', '64']
    argv = ['--layout', 'wmveid863', '--wmveid863-layout', 'flat', '--out', out, *small]
    assert tool.main(argv) == 0
    assert 'wmveid863 (flat): 3 train ids, 3 test ids' in capsys.readouterr().out
    assert sorted(os.listdir(osp.join(out, 'train'))) == ['ni', 'th', 'vis']
    ds = WMVeID863(out, split='test', serialize_data=False)
    assert ds.resolved_layout == 'flat' and len(ds) == 18
