import os
import os.path as osp
import re
import shutil

import pytest

from mmdmpt.datasets import RGBNT201
from mmdmpt.datasets.rgbnt201 import parse_rgbnt201_name
from mmdmpt.registry import DATASETS


def test_train_split(trees):
    root, summary = trees['rgbnt201']
    ds = RGBNT201(root, split='train')
    assert len(ds) == 6 * 4 * 2  # ids x cameras 1-4 x samples
    labels = [ds.get_data_info(i)['gt_label'] for i in range(len(ds))]
    assert sorted(set(labels)) == list(range(6))
    assert ds.metainfo['num_ids'] == 6
    assert ds.metainfo['classes'] == tuple(str(p) for p in sorted(summary['train_ids']))
    assert ds.metainfo['modalities'] == ('rgb', 'nir', 'tir')
    assert ds.metainfo['dataset_name'] == 'RGBNT201'
    assert ds.metainfo['has_scenes'] is False
    info = ds.get_data_info(0)
    assert info['tile_indices'] is None and 'num_tiles' not in info and 'sceneid' not in info
    assert info['is_query'] is False
    assert [osp.basename(osp.dirname(p)) for p in info['img_paths']] == ['RGB', 'NI', 'TI']
    assert len({osp.basename(p) for p in info['img_paths']}) == 1
    cams = {ds.get_data_info(i)['camid'] for i in range(len(ds))}
    assert cams == {0, 1, 2, 3}
    # relabelling follows the sorted raw ids
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        raw = int(osp.basename(info['img_paths'][0])[:6])
        assert ds.metainfo['classes'][info['gt_label']] == str(raw)


def test_test_split_order_and_raw_ids(trees):
    root, summary = trees['rgbnt201']
    ds = DATASETS.build(dict(type='RGBNT201', data_root=root, split='test'))
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    n = 6 * 2 * 2
    assert len(ds) == 2 * n  # query = gallery = test/
    assert [i['is_query'] for i in infos] == [True] * n + [False] * n
    assert [i['img_paths'] for i in infos[:n]] == [i['img_paths'] for i in infos[n:]]
    assert {i['gt_label'] for i in infos} == set(summary['test_ids'])
    assert {i['camid'] for i in infos} == {0, 1}
    assert not set(summary['test_ids']) & set(summary['train_ids'])
    query = RGBNT201(root, split='query')
    gallery = RGBNT201(root, split='gallery')
    assert len(query) == len(gallery) == n
    assert all(query.get_data_info(i)['is_query'] for i in range(n))
    assert not any(gallery.get_data_info(i)['is_query'] for i in range(n))
    assert ds.test_mode and not RGBNT201(root).test_mode


def test_modality_subset_keeps_order(trees):
    root, _ = trees['rgbnt201']
    ds = RGBNT201(root, split='query', modalities=('tir', 'rgb'))
    info = ds.get_data_info(0)
    assert ds.metainfo['modalities'] == ('tir', 'rgb') == info['modalities']
    assert [osp.basename(osp.dirname(p)) for p in info['img_paths']] == ['TI', 'RGB']


def _tree(tmp_path, writer, const_img, names=('000001_cam1_0_00.jpg', '000002_cam2_0_01.jpg')):
    root = tmp_path / 'RGBNT201'
    for split in ('train_171', 'test'):
        for folder in ('RGB', 'NI', 'TI'):
            for name in names:
                writer(root / split / folder / name, const_img(100))
    return root


def test_hidden_and_non_image_files_ignored(tmp_path, writer, const_img):
    root = _tree(tmp_path, writer, const_img)
    for folder in ('RGB', 'NI', 'TI'):
        d = root / 'train_171' / folder
        (d / '.DS_Store').write_bytes(b'x')
        (d / 'notes.txt').write_text('not an image')
        (d / 'Thumbs.db').write_bytes(b'x')
        (d / '._000001_cam1_0_00.jpg').write_bytes(b'apple double')
        writer(d / '000003_cam3_0_00.JPG', const_img(5))  # upper-case extension is read
    ds = RGBNT201(str(root), split='train')
    assert len(ds) == 3
    assert ds.metainfo['num_ids'] == 3


def test_missing_modality_file(tmp_path, writer, const_img):
    root = _tree(tmp_path, writer, const_img)
    os.remove(root / 'test' / 'NI' / '000002_cam2_0_01.jpg')
    missing = osp.join(str(root), 'test', 'NI', '000002_cam2_0_01.jpg')
    with pytest.raises(FileNotFoundError, match=re.escape(f"missing 'nir' image {missing}")):
        RGBNT201(str(root), split='test')
    # the file is not needed without NIR
    assert len(RGBNT201(str(root), split='gallery', modalities=('rgb', 'tir'))) == 2


def test_missing_modality_folder(tmp_path, writer, const_img):
    root = _tree(tmp_path, writer, const_img)
    shutil.rmtree(root / 'train_171' / 'TI')
    with pytest.raises(FileNotFoundError, match=r"modality 'tir' not found: .*train_171.TI"):
        RGBNT201(str(root))


def test_missing_split_folder_and_root(tmp_path, writer, const_img):
    root = _tree(tmp_path, writer, const_img)
    shutil.rmtree(root / 'test')
    with pytest.raises(FileNotFoundError, match=r"split 'query' not found: .*test"):
        RGBNT201(str(root), split='test')
    with pytest.raises(FileNotFoundError, match='data_root not found: .*nowhere'):
        RGBNT201(str(tmp_path / 'nowhere'))
    with pytest.raises(FileNotFoundError, match='data_root is empty'):
        RGBNT201('')


def test_unparseable_name(tmp_path, writer, const_img):
    root = _tree(tmp_path, writer, const_img)
    for folder in ('RGB', 'NI', 'TI'):
        writer(root / 'train_171' / folder / 'person7_c1.jpg', const_img(1))
    with pytest.raises(ValueError, match=r"cannot parse image name 'person7_c1.jpg'.*cam\{c\}"):
        RGBNT201(str(root))
    for folder in ('RGB', 'NI', 'TI'):
        os.remove(root / 'train_171' / folder / 'person7_c1.jpg')
        writer(root / 'train_171' / folder / '000009_cam0_0_00.jpg', const_img(1))
    with pytest.raises(ValueError, match='camera 0 is not 1-based'):
        RGBNT201(str(root))


def test_empty_split(tmp_path):
    root = tmp_path / 'RGBNT201'
    for folder in ('RGB', 'NI', 'TI'):
        os.makedirs(root / 'train_171' / folder)
        (root / 'train_171' / folder / 'readme.txt').write_text('x')
    with pytest.raises(ValueError, match="split 'train' is empty: no image under .*train_171"):
        RGBNT201(str(root))


@pytest.mark.parametrize(
    'kwargs, error, message',
    [
        (dict(split='validation'), ValueError, "unknown split 'validation'"),
        (dict(modalities=('rgb', 'depth')), ValueError, "unknown modality 'depth'"),
        (dict(modalities=()), ValueError, 'must name at least one modality'),
        (dict(modalities=('rgb', 'rgb')), ValueError, 'must not repeat'),
        (dict(val_fraction=1.0), ValueError, r'val_fraction must be in \[0, 1\), got 1.0'),
        (dict(val_fraction=-0.1), ValueError, r'val_fraction must be in \[0, 1\), got -0.1'),
        (dict(split='val'), ValueError, "split 'val' needs val_fraction > 0"),
    ],
)
def test_bad_arguments(trees, kwargs, error, message):
    root, _ = trees['rgbnt201']
    with pytest.raises(error, match=message):
        RGBNT201(root, **kwargs)


def test_name_parser():
    assert parse_rgbnt201_name('000028_cam1_0_02.jpg') == dict(gt_label=28, camid=0)
    assert parse_rgbnt201_name('000028_cam4.jpg', '/r/000028_cam4.jpg') == dict(
        gt_label=28, camid=3
    )
    # non-ASCII digits, a newline before the extension, no camera, camera 0
    for name in ('٠٠٠٠٢٨_cam1_0_02.jpg', '000028_cam1\n.jpg', '000028_0_02.jpg', '1_cam0.jpg'):
        with pytest.raises(
            ValueError,
            match=re.escape(f'RGBNT201: cannot parse image name {name!r} at /r/{name}'),
        ):
            parse_rgbnt201_name(name, f'/r/{name}')
