import os.path as osp
import re

import numpy as np
import pytest

from mmdmpt.datasets import RGBNT100, LoadMultiModalImages
from mmdmpt.datasets.rgbnt100 import parse_rgbnt100_name


def test_splits(trees):
    root, summary = trees['rgbnt100']
    train = RGBNT100(root, split='train')
    assert len(train) == 6 * 4 * 2  # ids x 4 cameras x samples
    assert sorted({train.get_data_info(i)['gt_label'] for i in range(len(train))}) == list(range(6))
    info = train.get_data_info(0)
    assert info['tile_indices'] == [0, 1, 2] and info['num_tiles'] == 3
    assert len(set(info['img_paths'])) == 1
    assert osp.dirname(info['img_paths'][0]).endswith(osp.join('rgbir', 'bounding_box_train'))
    test = RGBNT100(root, split='test')
    infos = [test.get_data_info(i) for i in range(len(test))]
    nq = 6 * 4  # one query per (test id, camera)
    assert [i['is_query'] for i in infos] == [True] * nq + [False] * (len(infos) - nq)
    assert len(infos) - nq == 6 * 4 * 1
    assert {i['gt_label'] for i in infos} == set(summary['test_ids'])
    assert all(0 <= i['camid'] <= 7 for i in infos)
    assert all('/query/' in i['img_paths'][0].replace(osp.sep, '/') for i in infos[:nq])
    # camera in the name is 1-based, stored 0-based
    name = osp.basename(infos[0]['img_paths'][0])
    assert infos[0]['camid'] == int(name.split('_c')[1][:4]) - 1


def test_subset_tiles(trees):
    root, _ = trees['rgbnt100']
    ds = RGBNT100(root, split='gallery', modalities=('tir', 'rgb'))
    info = ds.get_data_info(0)
    assert info['tile_indices'] == [2, 0] and len(info['img_paths']) == 2


def _strip_tree(tmp_path, writer, width=32, extra=0):
    """One strip per split with constant tiles: red | grey 100 | grey 200."""
    root = tmp_path / 'RGBNT100'
    h = 16
    tiles = [np.zeros((h, width, 3), np.uint8) for _ in range(3)]
    tiles[0][..., 0] = 255
    tiles[1][:] = 100
    tiles[2][:] = 200
    strip = np.concatenate(tiles + [np.zeros((h, extra, 3), np.uint8)], axis=1)
    for split in ('bounding_box_train', 'query', 'bounding_box_test'):
        writer(root / 'rgbir' / split / '0561_c0001_006.jpg', strip)
    return root


def test_tile_order_end_to_end(tmp_path, writer):
    root = _strip_tree(tmp_path, writer)
    ds = RGBNT100(str(root), split='query', pipeline=[dict(type='LoadMultiModalImages')])
    imgs = ds[0]['imgs']
    assert [im.shape for im in imgs] == [(16, 32, 3)] * 3
    # interiors (JPEG chroma subsampling blurs colours across tile borders)
    red, nir, tir = (im[:, 8:-8].astype(int) for im in imgs)
    assert np.abs(red - [255, 0, 0]).max() <= 6
    assert np.abs(nir - 100).max() <= 6 and np.abs(tir - 200).max() <= 6
    ds = RGBNT100(
        str(root),
        split='query',
        modalities=('tir', 'rgb'),
        pipeline=[dict(type='LoadMultiModalImages', tile_width=32)],
    )
    tir, red = (im[:, 8:-8].astype(int) for im in ds[0]['imgs'])
    assert np.abs(tir - 200).max() <= 6 and np.abs(red - [255, 0, 0]).max() <= 6
    assert ds.get_data_info(0)['camid'] == 0 and ds.get_data_info(0)['gt_label'] == 561


def test_strip_of_wrong_width(tmp_path, writer):
    root = _strip_tree(tmp_path, writer, extra=8)  # 104 px wide
    path = osp.join(str(root), 'rgbir', 'query', '0561_c0001_006.jpg')
    ds = RGBNT100(
        str(root), split='query', pipeline=[dict(type='LoadMultiModalImages', tile_width=32)]
    )
    with pytest.raises(
        ValueError,
        match=re.escape(f'strip {path} is 104 px wide; expected 3 tiles x 32 px = 96 px'),
    ):
        ds[0]
    root = _strip_tree(tmp_path / 'b', writer, extra=1)  # 97 px: not a multiple of 3
    loader = LoadMultiModalImages()
    ds = RGBNT100(str(root), split='query')
    with pytest.raises(ValueError, match='97 px wide; expected a width of 3 x the tile width'):
        loader(ds.get_data_info(0))


def test_bad_name_and_missing_split(tmp_path, writer):
    root = _strip_tree(tmp_path, writer)
    writer(root / 'rgbir' / 'query' / 'car_0561.jpg', np.zeros((16, 96, 3)))
    with pytest.raises(ValueError, match=r"cannot parse image name 'car_0561.jpg'.*_c\{cam:04d\}"):
        RGBNT100(str(root), split='query')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match=r"split 'train' not found: .*bounding_box_train"):
        RGBNT100(str(tmp_path / 'empty'), split='train')


def test_name_parser():
    assert parse_rgbnt100_name('0561_c0001_006.jpg') == dict(gt_label=561, camid=0)
    assert parse_rgbnt100_name('0561_c0008.jpg') == dict(gt_label=561, camid=7)
    for name in ('٠٥٦١_c0001_006.jpg', '0561_c0001\n.jpg', '0561_cam1_006.jpg', '0561_c0000.jpg'):
        with pytest.raises(
            ValueError,
            match=re.escape(f'RGBNT100: cannot parse image name {name!r} at /r/{name}'),
        ):
            parse_rgbnt100_name(name, f'/r/{name}')
