import os.path as osp
import re

import numpy as np
import pytest

from mmdmpt.datasets import LoadMultiModalImages


def _sample(tmp_path, writer):
    rgb = np.zeros((20, 10, 3), np.uint8)
    rgb[..., 0] = 250  # pure red
    paths = [str(tmp_path / 'rgb.png'), str(tmp_path / 'nir.png'), str(tmp_path / 'tir.jpg')]
    writer(paths[0], rgb)
    writer(paths[1], np.full((20, 10), 90))
    writer(paths[2], np.full((20, 10), 180))
    return dict(img_paths=paths, modalities=('rgb', 'nir', 'tir'), tile_indices=None)


def test_decode_rgb_order_and_grey(tmp_path, writer):
    out = LoadMultiModalImages()(_sample(tmp_path, writer))
    rgb, nir, tir = out['imgs']
    assert all(im.shape == (20, 10, 3) and im.dtype == np.uint8 for im in out['imgs'])
    assert all(im.flags.c_contiguous for im in out['imgs'])
    assert (rgb[..., 0] == 250).all() and (rgb[..., 1:] == 0).all()
    assert (nir == 90).all()
    assert np.abs(tir.astype(int) - 180).max() <= 2
    assert out['modality_mask'].dtype == bool and out['modality_mask'].all()
    assert out['img_shape'] == (20, 10) and out['ori_shapes'] == [(20, 10)] * 3


def test_missing_modalities(tmp_path, writer):
    results = _sample(tmp_path, writer)
    results['img_paths'][1] = str(tmp_path / 'never_read.png')  # absent file: not read
    out = LoadMultiModalImages(missing_modalities=('nir',))(results)
    assert out['modality_mask'].tolist() == [True, False, True]
    assert out['imgs'][1].shape == (20, 10, 3) and not out['imgs'][1].any()
    with pytest.raises(ValueError, match="missing_modalities=.*lowercase words.*'Depth!'"):
        LoadMultiModalImages(missing_modalities=('Depth!',))
    # any modality name is allowed (own data); one the sample lacks is ignored
    assert LoadMultiModalImages(missing_modalities=('depth',)).missing_modalities == ('depth',)
    with pytest.raises(ValueError, match='every modality of the sample'):
        LoadMultiModalImages(missing_modalities=('rgb', 'nir', 'tir'))(_sample(tmp_path, writer))
    # a name the sample does not carry is ignored
    sub = dict(img_paths=results['img_paths'][:1], modalities=('rgb',))
    assert LoadMultiModalImages(missing_modalities=('tir',))(sub)['modality_mask'].tolist() == [
        True
    ]


def test_bad_files(tmp_path, writer):
    results = _sample(tmp_path, writer)
    loader = LoadMultiModalImages()
    # corrupt
    (tmp_path / 'nir.png').write_bytes(b'definitely not an image' * 10)
    with pytest.raises(ValueError, match=re.escape(f'cannot decode image {tmp_path / "nir.png"}')):
        loader(dict(results))
    # truncated JPEG (OpenCV alone would decode it partially)
    data = (tmp_path / 'tir.jpg').read_bytes()
    big = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    writer(tmp_path / 'big.jpg', big)
    data = (tmp_path / 'big.jpg').read_bytes()
    (tmp_path / 'big.jpg').write_bytes(data[: len(data) // 2])
    results = _sample(tmp_path / 'b', writer)
    results['img_paths'][2] = str(tmp_path / 'big.jpg')
    with pytest.raises(ValueError, match=r'cannot decode image .*big.jpg: truncated JPEG'):
        loader(results)
    # empty file
    (tmp_path / 'empty.jpg').write_bytes(b'')
    results['img_paths'][2] = str(tmp_path / 'empty.jpg')
    with pytest.raises(ValueError, match=r'empty.jpg: the file is empty'):
        loader(results)
    # missing file
    results['img_paths'][2] = str(tmp_path / 'gone.jpg')
    with pytest.raises(
        FileNotFoundError, match=re.escape(f'image file not found: {tmp_path / "gone.jpg"}')
    ):
        loader(results)


def test_paths_modalities_mismatch(tmp_path, writer):
    results = _sample(tmp_path, writer)
    results['modalities'] = ('rgb', 'nir')
    with pytest.raises(ValueError, match='3 img_paths for 2 modalities'):
        LoadMultiModalImages()(results)


def test_strip_decoded_once(tmp_path, writer, monkeypatch):
    strip = np.concatenate([np.full((8, 16, 3), v, np.uint8) for v in (10, 120, 230)], axis=1)
    path = str(tmp_path / 'strip.png')
    writer(path, strip)
    loader = LoadMultiModalImages()
    reads = []
    real = loader._read
    monkeypatch.setattr(loader, '_read', lambda p: reads.append(p) or real(p))
    out = loader(
        dict(
            img_paths=[path] * 3,
            modalities=('rgb', 'nir', 'tir'),
            tile_indices=[0, 1, 2],
            num_tiles=3,
        )
    )
    assert reads == [path]
    assert [int(im.mean()) for im in out['imgs']] == [10, 120, 230]
    assert all(im.flags.c_contiguous and im.shape == (8, 16, 3) for im in out['imgs'])
    assert osp.exists(path)


def test_tile_indices_must_match_the_paths(tmp_path, writer):
    path = str(tmp_path / 'strip.png')
    writer(path, np.zeros((8, 48, 3), np.uint8))
    results = dict(
        img_paths=[path] * 3, modalities=('rgb', 'nir', 'tir'), tile_indices=[0, 1], num_tiles=3
    )
    with pytest.raises(ValueError, match=r'2 tile_indices \[0, 1\] for 3 img_paths'):
        LoadMultiModalImages()(results)
