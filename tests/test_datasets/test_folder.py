"""MultiModalReIDFolder: folder and CSV layouts, any modalities, missing cells, no cameras."""

import csv
import os
import shutil

import numpy as np
import pytest

from mmdmpt.datasets import MSVR310, RGBNT201, MultiModalReIDFolder
from mmdmpt.datasets.transforms import LoadMultiModalImages
from mmdmpt.testing import make_custom_synthetic
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError

TWO = ('rgb', 'depth')
FOUR = ('rgb', 'nir', 'tir', 'event')
TREE = dict(num_ids=12, train_ids=6, samples_per_camera=2, height=64, width=32, seed=3)


@pytest.fixture(scope='module')
def custom_trees(tmp_path_factory):
    """A 2-modality folder tree with cameras and a 4-modality CSV tree without."""
    base = tmp_path_factory.mktemp('custom')
    folder = make_custom_synthetic(
        str(base / 'folder'), TWO, 'folder', num_cameras=3, missing=0.25, **TREE
    )
    table = make_custom_synthetic(
        str(base / 'csv'), FOUR, 'csv', num_cameras=0, missing=0.2, **TREE
    )
    return dict(folder=(str(base / 'folder'), folder), csv=(str(base / 'csv'), table))


def _folder_kwargs(summary):
    return dict(
        modality_dirs=summary['modality_dirs'],
        name_pattern=summary['name_pattern'],
        removal_rule=summary['removal_rule'],
    )


def _lacking(ds):
    return sum(not all(ds.get_data_info(i)['img_paths']) for i in range(len(ds)))


def test_folder_layout_two_modalities(custom_trees, monkeypatch):
    import mmdmpt.datasets.base as base

    logged = []
    monkeypatch.setattr(base, 'print_log', lambda msg, **kw: logged.append(msg))
    root, summary = custom_trees['folder']
    train = MultiModalReIDFolder(root, 'train', TWO, **_folder_kwargs(summary))
    # 6 ids x 3 cameras x 2 samples, relabelled 0..5
    assert len(train) == 36 and train.metainfo['num_ids'] == 6
    assert sorted({train.get_data_info(i)['gt_label'] for i in range(36)}) == list(range(6))
    assert train.metainfo['modalities'] == TWO and train.metainfo['removal_rule'] == 'camera'
    assert train.metainfo['has_scenes'] is False
    info = train.get_data_info(0)
    first = min(summary['train_ids'])
    present = next(p for p in info['img_paths'] if p)
    assert os.path.basename(present) == f'{first:04d}_c1_000.jpg'
    assert info['camid'] == 1 and info['tile_indices'] is None

    test = MultiModalReIDFolder(root, 'test', TWO, **_folder_kwargs(summary))
    queries = [test.get_data_info(i) for i in range(len(test)) if test.get_data_info(i)['is_query']]
    assert len(queries) == 18 and len(test) == 36  # one query per (id, camera)
    assert {q['gt_label'] for q in queries} == set(summary['test_ids'])  # raw ids kept
    # samples lacking a modality: counted by the writer and in the summary
    lacking = _lacking(train) + _lacking(test)
    assert lacking == summary['num_lacking'] > 0
    table = logged[-1]
    assert '# lacking a modality' in table and 'same id and same camera' in table
    rows = [r for r in table.splitlines() if r.strip().startswith(('query', 'gallery'))]
    assert sum(int(r.split('|')[-1]) for r in rows) == _lacking(test)


def test_absent_file_is_an_absent_modality(custom_trees):
    root, summary = custom_trees['folder']
    test = MultiModalReIDFolder(root, 'test', TWO, **_folder_kwargs(summary))
    idx = next(i for i in range(len(test)) if not all(test.get_data_info(i)['img_paths']))
    info = test.get_data_info(idx)
    out = LoadMultiModalImages()(dict(info))
    expected = np.array([bool(p) for p in info['img_paths']])
    assert (out['modality_mask'] == expected).all() and not expected.all()
    absent = int(np.flatnonzero(~expected)[0])
    assert not out['imgs'][absent].any()  # a zero image where the file is absent


def test_csv_layout_four_modalities_without_cameras(custom_trees, monkeypatch):
    import mmdmpt.datasets.base as base

    logged = []
    monkeypatch.setattr(base, 'print_log', lambda msg, **kw: logged.append(msg))
    root, summary = custom_trees['csv']
    kwargs = dict(ann_file='annotations.csv', removal_rule='none')
    train = MultiModalReIDFolder(root, 'train', FOUR, **kwargs)
    test = MultiModalReIDFolder(root, 'test', FOUR, **kwargs)
    assert len(train) == 12 and train.metainfo['num_ids'] == 6
    assert test.metainfo['removal_rule'] == 'none' and test.metainfo['modalities'] == FOUR
    assert {test.get_data_info(i)['camid'] for i in range(len(test))} == {-1}  # no cameras
    assert sum(test.get_data_info(i)['is_query'] for i in range(len(test))) == 6
    assert _lacking(train) + _lacking(test) == summary['num_lacking'] > 0
    assert 'no removal rule' in logged[-1]
    # an empty cell is an absent modality
    with open(os.path.join(root, 'annotations.csv')) as f:
        rows = list(csv.DictReader(f))
    empty = next(r for r in rows if not all(r[m] for m in FOUR) and r['split'] == 'train')
    info = next(
        train.get_data_info(i)
        for i in range(len(train))
        if train.get_data_info(i)['img_paths'][0].endswith(empty['rgb'] or '\0')
        or train.get_data_info(i)['img_paths'][1] == os.path.join(root, empty['nir'])
    )
    assert [p is None for p in info['img_paths']] == [not empty[m] for m in FOUR]
    # held-out ids and the whole file without splits (ids optional there)
    val = MultiModalReIDFolder(root, 'val', FOUR, val_fraction=0.34, **kwargs)
    assert val.metainfo['num_ids'] == 2 and len(val) == 4
    everything = MultiModalReIDFolder(root, None, FOUR, **kwargs)
    assert len(everything) == sum(summary['num_samples'].values())


def test_gallery_without_split_and_without_ids(custom_trees):
    root, summary = custom_trees['folder']
    gallery = MultiModalReIDFolder(
        os.path.join(root, 'gallery'), None, TWO, modality_dirs=summary['modality_dirs']
    )
    assert len(gallery) == summary['num_samples']['gallery']
    infos = [gallery.get_data_info(i) for i in range(len(gallery))]
    assert {i['gt_label'] for i in infos} == {-1} and not any(i['is_query'] for i in infos)
    assert gallery.metainfo['num_ids'] == 0


def test_benchmarks_report_their_removal_rule(trees):
    assert RGBNT201(trees['rgbnt201'][0], split='test').metainfo['removal_rule'] == 'camera'
    assert MSVR310(trees['msvr310'][0], split='test').metainfo['removal_rule'] == 'scene'


def _an_image(root, split):
    folder = os.path.join(root, split, 'RGB')
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def _copy(custom_trees, tmp_path, key='folder'):
    root = tmp_path / key
    shutil.copytree(custom_trees[key][0], root)
    return str(root)


def test_folder_errors(custom_trees, tmp_path):
    root, summary = custom_trees['folder']
    kwargs = _folder_kwargs(summary)
    with pytest.raises(ConfigError, match=r"split 'train' needs identities.*split=None"):
        MultiModalReIDFolder(root, 'train', TWO, modality_dirs=summary['modality_dirs'])
    with pytest.raises(ConfigError, match='not a valid regular expression'):
        MultiModalReIDFolder(root, 'train', TWO, **{**kwargs, 'name_pattern': '(?P<pid>'})
    with pytest.raises(ConfigError, match=r'no named group for the identity'):
        MultiModalReIDFolder(root, 'train', TWO, **{**kwargs, 'name_pattern': r'(\d+)_.*'})
    no_cam = {**kwargs, 'name_pattern': r'(?P<pid>\d+)_c\d+_\d+'}
    with pytest.raises(ConfigError, match=r"needs a \(\?P<camid>\.\.\.\) group.*'none'"):
        MultiModalReIDFolder(root, 'train', TWO, **no_cam)
    assert MultiModalReIDFolder(root, 'train', TWO, **{**no_cam, 'removal_rule': 'none'})
    with pytest.raises(ConfigError, match='removal_rule=.cams.; expected one of'):
        MultiModalReIDFolder(root, 'train', TWO, **{**kwargs, 'removal_rule': 'cams'})
    with pytest.raises(ConfigError, match='state the modalities'):
        MultiModalReIDFolder(root, 'train', **kwargs)
    with pytest.raises(DataNotFoundError, match=r"folder of modality 'depth' not found.*DEPTH"):
        MultiModalReIDFolder(root, 'train', TWO, **{**kwargs, 'modality_dirs': {'rgb': 'RGB'}})
    with pytest.raises(DataNotFoundError, match=r"no '(rgb|depth)' image named .*allow_missing"):
        MultiModalReIDFolder(root, 'train', TWO, allow_missing=False, **kwargs)
    # an unparsable name shows the regular expression
    copy = _copy(custom_trees, tmp_path)
    shutil.copy(_an_image(copy, 'train'), os.path.join(copy, 'train', 'RGB', 'holiday.jpg'))
    with pytest.raises(DataError, match=r"cannot parse image name 'holiday.jpg'") as info:
        MultiModalReIDFolder(copy, 'train', TWO, **kwargs)
    assert summary['name_pattern'] in str(info.value)  # the expression is shown


def test_query_ids_missing_from_the_gallery(custom_trees, tmp_path):
    root, summary = custom_trees['folder']
    copy = _copy(custom_trees, tmp_path)
    for folder in ('RGB', 'DEPTH'):
        shutil.rmtree(os.path.join(copy, 'gallery', folder))
        os.makedirs(os.path.join(copy, 'gallery', folder))
    pid = min(summary['train_ids'])
    shutil.copy(_an_image(copy, 'train'), os.path.join(copy, 'gallery', 'RGB', f'{pid}_c1_5.jpg'))
    with pytest.raises(DataError, match=r"none of the 6 query ids of split 'query' is in split"):
        MultiModalReIDFolder(copy, 'test', TWO, **_folder_kwargs(summary))


def _write_csv(path, rows, header=('split', 'pid', 'camid', 'rgb', 'depth')):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_csv_errors(custom_trees, tmp_path):
    root, _ = custom_trees['folder']
    img = os.path.relpath(_an_image(root, 'train'), tmp_path)
    ann = str(tmp_path / 'ann.csv')

    def build(split='train', **kw):
        return MultiModalReIDFolder(str(tmp_path), split, TWO, ann_file='ann.csv', **kw)

    _write_csv(ann, [['train', 1, 0, img, 'nowhere/x.png']])
    with pytest.raises(DataNotFoundError, match=r"ann.csv line 2: column 'depth' points to"):
        build()
    _write_csv(ann, [['train', 1, 0, '', '']])
    with pytest.raises(DataError, match='line 2: no image in any modality column'):
        build()
    _write_csv(ann, [['train', '', 0, img, '']])
    with pytest.raises(DataError, match=r"line 2: column 'pid' is empty; split 'train' needs ids"):
        build()
    _write_csv(ann, [['training', 1, 0, img, '']])
    with pytest.raises(DataError, match=r"line 2: split 'training'; expected one of"):
        build()
    _write_csv(ann, [['train', 'x7', 0, img, '']])
    with pytest.raises(DataError, match=r"column 'pid' holds 'x7'; expected an integer"):
        build()
    _write_csv(ann, [['train', 1, img, '']], header=('split', 'pid', 'rgb', 'depth'))
    with pytest.raises(DataError, match=r"lacks the columns \['camid'\]"):
        build()
    assert len(build(removal_rule='none')) == 1  # no camera column needed then
    _write_csv(ann, [['train', 1, 0, img, '']])
    with pytest.raises(DataError, match=r"split 'query' is empty: no row of .*ann.csv"):
        build('test')
    with pytest.raises(DataNotFoundError, match='annotation file not found'):
        MultiModalReIDFolder(str(tmp_path), 'train', TWO, ann_file='other.csv')
