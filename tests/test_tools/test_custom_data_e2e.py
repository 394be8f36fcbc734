"""Own data end to end: train / test custom trees, search a gallery, calibrate a threshold.

Two trees of the synthetic generator's custom writer: RGB + depth in folders
(cameras, samples lacking a modality) and RGB + NIR + TIR + event in an
annotation CSV (no cameras, empty cells); a tiny DMPT (the pattern of
``tests/data/tiny_dmpt_rgbnt201.py``) trains one epoch on each through
``tools/train.py`` and is tested through ``tools/test.py``; the folder model
is then calibrated on its held-out ids and searched with ``tools/search.py``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmdmpt.testing import load_script, make_custom_synthetic

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / 'tests' / 'data' / 'tiny_dmpt_rgbnt201.py'
pytestmark = pytest.mark.slow

CONFIG = """_base_ = [{tiny!r}]
dataset_type = 'MultiModalReIDFolder'
data_root = {root!r}
modalities = {modalities!r}
custom = {custom!r}
model = dict(head=dict(in_channels=None, num_classes='auto'))
train_dataloader = dict(dataset=dict(custom, val_fraction={val_fraction!r}))
val_dataloader = dict(dataset=custom)
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=1, T_max=1)]
"""


def _run(args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, result.stdout + result.stderr


def _write_config(path, root, modalities, custom, val_fraction=0.0):
    path.write_text(
        CONFIG.format(
            tiny=str(TINY),
            root=str(root),
            modalities=tuple(modalities),
            custom=custom,
            val_fraction=val_fraction,
        )
    )
    return path


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Both trees written, configured and trained for one epoch."""
    base = tmp_path_factory.mktemp('custom_e2e')
    tree = dict(num_ids=12, train_ids=6, samples_per_camera=2, height=64, width=32, seed=3)
    out = {}
    folder = make_custom_synthetic(
        str(base / 'folder'), ('rgb', 'depth'), 'folder', num_cameras=3, missing=0.2, **tree
    )
    custom = dict(
        name_pattern=folder['name_pattern'],
        modality_dirs=folder['modality_dirs'],
        removal_rule='camera',
    )
    out['folder'] = dict(
        root=base / 'folder',
        summary=folder,
        config=_write_config(base / 'folder.py', base / 'folder', ('rgb', 'depth'), custom, 0.5),
    )
    table = make_custom_synthetic(
        str(base / 'csv'), ('rgb', 'nir', 'tir', 'event'), 'csv', num_cameras=0, missing=0.15,
        **tree,
    )  # fmt: skip
    custom = dict(ann_file='annotations.csv', removal_rule='none')
    out['csv'] = dict(
        root=base / 'csv',
        summary=table,
        config=_write_config(base / 'csv.py', base / 'csv', table['modalities'], custom),
    )
    for key, run in out.items():
        run['work'] = base / f'work_{key}'
        result, log = _run(['tools/train.py', run['config'], '--work-dir', run['work']])
        assert result.returncode == 0, log[-3000:]
        run['train_log'] = log
        run['ckpt'] = run['work'] / 'epoch_1.pth'
    return out


@pytest.mark.parametrize('key', ['folder', 'csv'])
def test_train_and_test_on_custom_data(runs, key, tmp_path):
    run = runs[key]
    log = run['train_log']
    assert 'loss_triplet:' in log and 'reid/mAP' in log and run['ckpt'].is_file()
    rule = 'same id and same camera' if key == 'folder' else 'no removal rule (nothing hidden)'
    assert f'removal rule: {rule}' in log and '# lacking a modality' in log
    num_ids = 3 if key == 'folder' else 6  # the folder run holds out half its 6 training ids
    assert f"num_classes='auto' -> {num_ids}" in log
    out = tmp_path / 'metrics.json'
    result, log = _run(
        ['tools/test.py', run['config'], run['ckpt'], '--work-dir', tmp_path, '--out', out]
    )
    assert result.returncode == 0, log[-3000:]
    metrics = next(iter(json.loads(out.read_text()).values()))
    assert 0.0 < metrics['reid/mAP'] <= 100.0
    assert f'removal rule: {rule}' in log


def test_calibrate_then_search_with_a_cached_gallery(runs, tmp_path, capsys):
    run = runs['folder']
    calibration = tmp_path / 'calibration.json'
    result, log = _run(
        [
            'tools/analysis_tools/calibrate_threshold.py',
            run['config'],
            run['ckpt'],
            '--target-fmr',
            '0.1',
            '--out',
            calibration,
        ]
    )
    assert result.returncode == 0, log[-3000:]
    cal = json.loads(calibration.read_text())
    assert cal['split'] == 'val' and cal['num_ids'] == 3 and cal['fmr'] <= 0.1
    assert (tmp_path / 'calibration_roc.png').stat().st_size > 0
    assert f'threshold {cal["threshold"]:.4f}' in log

    gallery = run['root'] / 'gallery'
    name = sorted(os.listdir(run['root'] / 'query' / 'RGB'))[0]
    query = [f'rgb={run["root"] / "query" / "RGB" / name}']
    cache = tmp_path / 'cache'
    args = ['tools/search.py', run['config'], run['ckpt'], '--gallery', gallery, '--query']
    args += query + ['--topk', '4', '--cache-dir', cache, '--calibration', calibration]
    searched = []
    for n in range(2):
        result, log = _run(args + ['--out-dir', tmp_path / f'out{n}'])
        assert result.returncode == 0, log[-3000:]
        searched.append(json.loads((tmp_path / f'out{n}' / 'results.json').read_text()))
        assert (tmp_path / f'out{n}' / 'query000.png').stat().st_size > 0
    assert not searched[0]['cache']['reused'] and searched[1]['cache']['reused']
    assert searched[0]['queries'] == searched[1]['queries']
    results = searched[1]['queries'][0]['results']
    assert len(results) == 4 and searched[1]['threshold'] == cal['threshold']
    for entry in results:
        assert entry['same_identity'] == (entry['distance'] <= cal['threshold'])
    assert 'features read from the cache' in log and 'same id?' in log

    # user errors: one block, exit status 2, before the model is built
    tool = load_script(ROOT / 'tools' / 'search.py')
    image = str(run['root'] / 'query' / 'RGB' / name)
    base = [str(a) for a in args[1:-4]]  # without the script and the cache options
    for extra, message in (
        (['--query', f'sonar={image}'], "unknown modality ['sonar']"),
        (['--query', 'rgb=nowhere.jpg'], 'rgb image not found: nowhere.jpg'),
    ):
        assert tool.run_tool(tool.main, base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err
    with pytest.raises(SystemExit) as exit_info:
        tool.main(base + ['--index', 'ivf'])
    assert exit_info.value.code == 2
    assert '--index ivf needs --backend faiss' in capsys.readouterr().err
