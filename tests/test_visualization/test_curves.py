import json

import cv2
import pytest

from mmdmpt.visualization import collect_curves, find_scalars_file, load_scalars, plot_curves

RECORDS = [
    {
        'lr': 1e-3,
        'data_time': 0.1,
        'loss': 2.0,
        'loss_cls': 1.5,
        'loss_triplet': 0.5,
        'time': 0.3,
        'epoch': 1,
        'iter': 10,
        'memory': 100,
        'step': 10,
    },
    {
        'lr': 9e-4,
        'data_time': 0.1,
        'loss': 1.5,
        'loss_cls': 1.1,
        'loss_triplet': 0.4,
        'time': 0.3,
        'epoch': 1,
        'iter': 20,
        'memory': 100,
        'step': 20,
    },
    {
        'reid/mAP': 40.0,
        'reid/Rank-1': 55.0,
        'reid/mINP': 10.0,
        'data_time': 0.0,
        'time': 0.1,
        'step': 1,
    },
    {
        'lr': 8e-4,
        'data_time': 0.1,
        'loss': 1.0,
        'loss_cls': 0.8,
        'loss_triplet': 0.2,
        'time': 0.3,
        'epoch': 2,
        'iter': 30,
        'memory': 100,
        'step': 30,
    },
    {
        'reid/mAP': 50.0,
        'reid/Rank-1': 60.0,
        'reid/mINP': 12.0,
        'data_time': 0.0,
        'time': 0.1,
        'step': 2,
    },
]


@pytest.fixture
def work_dir(tmp_path):
    run = tmp_path / 'work' / '20240101_000000' / 'vis_data'
    run.mkdir(parents=True)
    (run / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in RECORDS) + '\n')
    return tmp_path / 'work'


def test_collect_curves_default_keys_and_axes(work_dir):
    records = load_scalars(str(work_dir))
    assert len(records) == 5
    curves = collect_curves(records)
    assert list(curves) == ['loss', 'loss_cls', 'loss_triplet', 'reid/mAP', 'reid/Rank-1']
    assert curves['loss'] == ([10.0, 20.0, 30.0], [2.0, 1.5, 1.0], 'iteration')
    assert curves['reid/mAP'] == ([1.0, 2.0], [40.0, 50.0], 'epoch')
    assert list(collect_curves(records, ['lr'])) == ['lr']


def test_plot_curves_writes_png(work_dir, tmp_path):
    out = str(tmp_path / 'plots' / 'curves.png')
    keys = plot_curves(str(work_dir), out)
    assert 'reid/Rank-1' in keys
    img = cv2.imread(out)
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert find_scalars_file(str(work_dir)).endswith('20240101_000000/vis_data/scalars.json')


def test_errors(work_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match='no scalar log'):
        load_scalars(str(tmp_path / 'empty'))
    with pytest.raises(KeyError, match=r"keys \['acc'\] are not in the scalar log"):
        collect_curves(RECORDS, ['acc'])
    with pytest.raises(KeyError, match='no loss key'):
        collect_curves([{'time': 1.0, 'step': 1}])
    bad = tmp_path / 'bad.json'
    bad.write_text('{"loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match='bad.json:2'):
        load_scalars(str(bad))
