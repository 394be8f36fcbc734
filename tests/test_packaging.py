"""The wheel: ``mmdmpt/.mim`` (configs, tools, model index) and an install into a fresh venv.

The wheel is built from a copy of the files ``setup.py`` packs (so that the
shared checkout gets no ``build/`` or ``*.egg-info``), with the interpreter's
own setuptools (``--no-build-isolation``: offline, seconds). The fresh venv
has no pip and no packages of its own; the dependencies (torch, mmengine, ...)
are those of the running interpreter, reached through a ``.pth`` path line,
which does not process that folder's own ``.pth`` files, so the checkout's
editable install of mmdmpt stays out of sight.
"""

import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What setup.py reads or packs.
SOURCES = (
    'setup.py',
    'pyproject.toml',
    'MANIFEST.in',
    'README.md',
    'model-index.yml',
    'requirements',
    'mmdmpt',
    'configs',
    'tools',
)
MIM = 'mmdmpt/.mim/'


def run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f'{cmd}\n{proc.stdout}\n{proc.stderr}'
    return proc


def repo_files(folder):
    """Files under ``ROOT/folder`` as ``.mim`` should hold them (no bytecode)."""
    found = set()
    for dirpath, dirnames, files in os.walk(ROOT / folder):
        dirnames[:] = [d for d in dirnames if d != '__pycache__']
        for name in files:
            if not name.endswith(('.pyc', '.pyo')):
                found.add(osp.relpath(osp.join(dirpath, name), ROOT).replace(os.sep, '/'))
    return found


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    src = tmp_path_factory.mktemp('pkg') / 'src'
    src.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim')
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    return src


@pytest.fixture(scope='module')
def wheel(source):
    out = source.parent / 'dist'
    run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q']
        + ['--no-index', '-w', str(out), str(source)]
    )
    (path,) = out.glob('mmdmpt-*.whl')
    return path


def test_wheel_carries_configs_tools_and_index_in_mim(wheel, source):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        mim = {n[len(MIM) :] for n in names if n.startswith(MIM)}
        expected = repo_files('configs') | repo_files('tools') | {'model-index.yml'}
        assert mim == expected
        for rel in ('model-index.yml', 'configs/dmpt/metafile.yml', 'tools/train.py'):
            assert zf.read(MIM + rel) == (ROOT / rel).read_bytes(), rel
    assert not any('__pycache__' in n for n in names)
    assert 'mmdmpt/apis/model_zoo.py' in names
    # copied into the build folder only, never into the source tree
    assert not (source / 'mmdmpt' / '.mim').exists()


def test_sdist_builds_the_same_wheel(wheel, source):
    """``python -m build`` goes through an sdist: MANIFEST.in must carry what .mim needs."""
    sdist_dir = source.parent / 'sdist'
    run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(sdist_dir)], cwd=source)
    (sdist,) = sdist_dir.glob('mmdmpt-*.tar.gz')
    with tarfile.open(sdist) as tf:
        safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
        tf.extractall(sdist_dir, **safe)
    out = source.parent / 'dist_from_sdist'
    unpacked = sdist_dir / sdist.name[: -len('.tar.gz')]
    run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q']
        + ['--no-index', '-w', str(out), str(unpacked)]
    )
    (again,) = out.glob('mmdmpt-*.whl')
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(again) as b:
        files_a = {n for n in a.namelist() if '.dist-info/' not in n}
        files_b = {n for n in b.namelist() if '.dist-info/' not in n}
    assert files_a == files_b


def test_wheel_installs_into_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / 'venv'
    run([sys.executable, '-m', 'venv', '--without-pip', str(venv)])
    python = str(venv / 'bin' / 'python')
    purelib = run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'])
    site = Path(purelib.stdout.strip())
    (site / 'mmdmpt_test_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    run([sys.executable, '-m', 'pip', '--python', python, 'install', '-q', '--no-deps']
        + ['--no-index', str(wheel)])  # fmt: skip
    probe = (
        'import json, os, mmdmpt\n'
        "apis = mmdmpt.apis  # the issue's literal form: no explicit subpackage import\n"
        'from mmdmpt.apis.model_zoo import model_index_path\n'
        'cfg = apis.ModelHub.get("dmpt_vit-tiny_synthetic").config\n'
        'pkg = os.path.dirname(mmdmpt.__file__)\n'
        'found = {}\n'
        'for d, _, files in os.walk(pkg):\n'
        '    for f in files:\n'
        '        found.setdefault(f, []).append(os.path.join(d, f))\n'
        'print(json.dumps(dict(file=mmdmpt.__file__, version=mmdmpt.__version__,\n'
        '    index=model_index_path(), models=apis.list_models(), config=cfg.filename,\n'
        '    epochs=cfg.train_cfg.max_epochs, found=found)))\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env['OMP_NUM_THREADS'] = '1'
    out = json.loads(run([python, '-c', probe], cwd=tmp_path, env=env).stdout.splitlines()[-1])
    package = site / 'mmdmpt'
    assert out['file'] == str(package / '__init__.py')  # the wheel's copy, not the checkout
    assert out['index'] == str(package / '.mim' / 'model-index.yml')
    names = sorted(
        p.stem for d in ('dmpt', 'baselines') for p in (ROOT / 'configs' / d).glob('*.py')
    )
    assert out['models'] == names
    assert out['config'] == str(
        package / '.mim' / 'configs' / 'dmpt' / 'dmpt_vit-tiny_synthetic.py'
    )
    assert out['epochs'] > 0  # its _base_ files were found in .mim too
    # `mim train mmdmpt NAME.py` finds a config by its file name anywhere in the package
    for name in names:
        assert len(out['found'][f'{name}.py']) == 1, out['found'][f'{name}.py']
    from mmdmpt import __version__

    assert out['version'] == __version__


def test_editable_install_reads_the_checkout(source, tmp_path):
    """``pip install -e .`` (as the Makefile does) copies nothing into the source tree."""
    venv = tmp_path / 'venv'
    run([sys.executable, '-m', 'venv', '--without-pip', str(venv)])
    python = str(venv / 'bin' / 'python')
    purelib = run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'])
    (Path(purelib.stdout.strip()) / 'deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    run(
        [sys.executable, '-m', 'pip', '--python', python, 'install', '-q', '--no-deps']
        + ['--no-build-isolation', '--no-index', '-e', str(source)]
    )
    probe = (
        'import mmdmpt, mmdmpt.apis as apis\n'
        'from mmdmpt.apis.model_zoo import model_index_path\n'
        'print(mmdmpt.__file__, model_index_path(), len(apis.list_models()))\n'
    )
    out = run([python, '-c', probe], cwd=tmp_path).stdout.split()
    assert out[:2] == [str(source / 'mmdmpt' / '__init__.py'), str(source / 'model-index.yml')]
    assert int(out[2]) == len(list((ROOT / 'configs' / 'dmpt').glob('*.py'))) + len(
        list((ROOT / 'configs' / 'baselines').glob('*.py'))
    )
    assert not (source / 'mmdmpt' / '.mim').exists()
