"""Guarantee 4 (part): the dataset loaders on damaged trees raise documented errors only.

Each test copies a small valid synthetic tree (under a folder whose name holds spaces and
non-ASCII letters) and damages it. The outcome is either the documented error naming the
file (at build time or when LoadMultiModalImages reads the sample) or the documented
handling of the sample; never another exception, a hang, a dropped or a mislabelled sample.
"""

import os
import os.path as osp
import re
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest

from mmdmpt.datasets import MSVR310, RGBNT100, RGBNT201, LoadMultiModalImages, WMVeID863
from mmdmpt.testing import make_synthetic

TREE_ARGS = dict(num_ids=6, train_ids=3, samples_per_camera=2, seed=5, family_size=3)
SPECS = {
    'rgbnt201': dict(cls=RGBNT201, size=(64, 32), query='test'),
    'rgbnt100': dict(cls=RGBNT100, size=(32, 64), query=osp.join('rgbir', 'query')),
    'msvr310': dict(cls=MSVR310, size=(32, 64), query='query3'),
    'wmveid863': dict(cls=WMVeID863, size=(32, 64), query='query'),
}
LAYOUTS = list(SPECS)
SEPARATE_FILES = ['rgbnt201', 'msvr310', 'wmveid863']  # one file per modality


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    """layout -> root of a small valid tree, written once."""
    base = tmp_path_factory.mktemp('pristine')
    roots = {}
    for layout, spec in SPECS.items():
        h, w = spec['size']
        roots[layout] = str(base / layout)
        make_synthetic(roots[layout], layout=layout, height=h, width=w, **TREE_ARGS)
    return roots


@pytest.fixture
def copy_tree(pristine, tmp_path):
    """``copy_tree(layout)``: a fresh copy of the tree under an odd folder name."""

    def make(layout):
        root = tmp_path / 'dätä röot ü (1)' / layout
        shutil.copytree(pristine[layout], root)
        return str(root)

    return make


def _records(ds):
    keys = ('img_paths', 'gt_label', 'camid', 'sceneid', 'night', 'is_query')
    return [
        tuple(tuple(v) if isinstance(v, list) else v for v in map(info.get, keys))
        for info in (ds.get_data_info(i) for i in range(len(ds)))
    ]


def _query(layout, root, **kwargs):
    # serialize_data=False: the same data list without BaseDataset's gc.collect() per build
    return SPECS[layout]['cls'](root, split='query', serialize_data=False, **kwargs)


def _index_of(ds, path):
    return next(i for i in range(len(ds)) if path in ds.get_data_info(i)['img_paths'])


def _png_header(width, height):
    """A PNG whose header announces ``width x height`` pixels (complete, IEND last)."""

    def chunk(kind, data):
        return (
            struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
        )

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b'\x00' * 16)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')


def _damage(kind, data):
    rng = np.random.default_rng(0)
    return {
        'empty': b'',
        'junk': rng.bytes(len(data)),
        'junk_jpeg_markers': b'\xff\xd8' + rng.bytes(len(data)) + b'\xff\xd9',
        'truncated_jpeg': data[: len(data) // 2],
        'huge_png_header': _png_header(200_000, 200_000),
    }[kind]


REASONS = {
    'empty': 'the file is empty',
    'junk': 'corrupt or not an image',
    'junk_jpeg_markers': 'corrupt or not an image',
    'truncated_jpeg': 'truncated JPEG',
    'huge_png_header': 'corrupt or not an image',
}


@pytest.mark.parametrize('kind', list(REASONS))
@pytest.mark.parametrize('layout', LAYOUTS)
def test_bad_image_content_is_named_at_load_time(copy_tree, layout, kind):
    root = copy_tree(layout)
    before = _records(_query(layout, root))
    target = _query(layout, root).get_data_info(0)['img_paths'][-1]  # TIR file or the strip
    with open(target, 'rb') as f:
        data = f.read()
    with open(target, 'wb') as f:
        f.write(_damage(kind, data))
    ds = _query(layout, root, pipeline=[LoadMultiModalImages()])
    assert _records(ds) == before  # listing does not read content: nothing dropped
    with pytest.raises(
        ValueError, match=re.escape(f'cannot decode image {target}: {REASONS[kind]}')
    ):
        ds[_index_of(ds, target)]
    other = next(i for i in range(len(ds)) if target not in ds.get_data_info(i)['img_paths'])
    assert len(ds[other]['imgs']) == 3  # the other samples still load


@pytest.mark.parametrize('layout', LAYOUTS)
def test_file_removed_after_build_is_named(copy_tree, layout):
    root = copy_tree(layout)
    ds = _query(layout, root, pipeline=[LoadMultiModalImages()])
    target = ds.get_data_info(0)['img_paths'][-1]
    os.remove(target)
    with pytest.raises(FileNotFoundError, match=re.escape(f'image file not found: {target}')):
        ds[0]


def _write_strip(path, width, height):
    strip = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode('.jpg', strip)
    assert ok
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


@pytest.mark.parametrize('tiles', [2, 4, 3.5])
def test_rgbnt100_strip_of_wrong_width(copy_tree, tiles):
    root = copy_tree('rgbnt100')
    h, w = SPECS['rgbnt100']['size']
    before = _records(_query('rgbnt100', root))
    target = _query('rgbnt100', root).get_data_info(0)['img_paths'][0]
    width = int(tiles * w)  # 128, 256, 224 px: none of them 3 x 64
    _write_strip(target, width, h)
    ds = _query('rgbnt100', root, pipeline=[LoadMultiModalImages(tile_width=w)])  # the configs
    assert _records(ds) == before
    expected = f'strip {target} is {width} px wide; expected 3 tiles x {w} px = {3 * w} px'
    with pytest.raises(ValueError, match=re.escape(expected)):
        ds[_index_of(ds, target)]
    # without a tile width, a width that 3 does not divide is refused too
    ds = _query('rgbnt100', root, pipeline=[LoadMultiModalImages()])
    if width % 3:
        with pytest.raises(ValueError, match=re.escape(f'strip {target} is {width} px wide')):
            ds[_index_of(ds, target)]


def test_rgbnt100_narrower_three_tile_strip_needs_the_tile_width(copy_tree):
    # a 3-tile strip of half-width tiles is a valid strip when no tile width is given (the
    # tiles are cut at a third each); the configs give tile_width, which refuses it
    root = copy_tree('rgbnt100')
    h, w = SPECS['rgbnt100']['size']
    target = _query('rgbnt100', root).get_data_info(0)['img_paths'][0]
    _write_strip(target, 3 * (w // 2), h)
    ds = _query('rgbnt100', root, pipeline=[LoadMultiModalImages()])
    assert [im.shape for im in ds[_index_of(ds, target)]['imgs']] == [(h, w // 2, 3)] * 3
    ds = _query('rgbnt100', root, pipeline=[LoadMultiModalImages(tile_width=w)])
    with pytest.raises(ValueError, match=re.escape(f'strip {target} is {3 * (w // 2)} px wide')):
        ds[_index_of(ds, target)]


def test_rgbnt201_modality_image_of_another_size(copy_tree):
    # RGBNT201 keeps each modality in its own file; one of another size is resized with the
    # others by the pipeline (its original shape is kept in ori_shapes), and packing images
    # of different sizes without a resize is the documented error
    from mmdmpt.datasets import PackMultiModalReIDInputs

    root = copy_tree('rgbnt201')
    h, w = SPECS['rgbnt201']['size']
    target = _query('rgbnt201', root).get_data_info(0)['img_paths'][1]
    _write_strip(target, 2 * w, h)
    ds = _query('rgbnt201', root, pipeline=[LoadMultiModalImages()])
    out = ds[_index_of(ds, target)]
    assert out['ori_shapes'] == [(h, w), (h, 2 * w), (h, w)]
    with pytest.raises(ValueError, match='modality images differ in shape'):
        PackMultiModalReIDInputs()(out)


def _rename_sample(info, new_name):
    paths = []
    for path in dict.fromkeys(info['img_paths']):
        new = osp.join(osp.dirname(path), new_name)
        os.rename(path, new)
        paths.append(new)
    return paths


@pytest.mark.parametrize('layout', LAYOUTS)
def test_unicode_and_spaces_in_the_unused_part_of_a_name(copy_tree, layout):
    root = copy_tree(layout)
    count = len(_query(layout, root))
    before = _query(layout, root).get_data_info(0)
    stem, ext = osp.splitext(osp.basename(before['img_paths'][0]))
    new_paths = _rename_sample(before, f'{stem} é ü (copy){ext}')
    ds = _query(layout, root, pipeline=[LoadMultiModalImages()])
    info = ds.get_data_info(_index_of(ds, new_paths[0]))
    for key in ('gt_label', 'camid', 'sceneid', 'night'):
        assert info.get(key) == before.get(key), key
    assert len(ds) == count
    assert len(ds[_index_of(ds, new_paths[0])]['imgs']) == 3


ARABIC_INDIC = str.maketrans('0123456789', '٠١٢٣٤٥٦٧٨٩')


@pytest.mark.parametrize('layout', LAYOUTS)
def test_foreign_digits_in_a_name_are_refused(copy_tree, layout):
    # Python's \d and int() read '٣' as 3; the parsers accept ASCII digits only
    root = copy_tree(layout)
    info = _query(layout, root).get_data_info(0)
    stem, ext = osp.splitext(osp.basename(info['img_paths'][0]))
    new_name = stem.translate(ARABIC_INDIC) + ext
    new_paths = _rename_sample(info, new_name)
    name = SPECS[layout]['cls'].DATASET_NAME
    with pytest.raises(
        ValueError, match=re.escape(f'{name}: cannot parse image name {new_name!r}')
    ) as info:
        _query(layout, root)
    assert new_paths[0] in str(info.value)


@pytest.mark.parametrize('layout', SEPARATE_FILES)
def test_missing_modality_file_is_named_at_build_time(copy_tree, layout):
    root = copy_tree(layout)
    info = _query(layout, root).get_data_info(0)
    count = len(_query(layout, root))
    os.remove(info['img_paths'][1])
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"missing 'nir' image {info['img_paths'][1]}")
    ):
        _query(layout, root)
    assert len(_query(layout, root, modalities=('rgb', 'tir'))) == count  # not needed: kept


@pytest.mark.parametrize('layout', SEPARATE_FILES)
def test_missing_modality_folder_is_named_at_build_time(copy_tree, layout):
    root = copy_tree(layout)
    folder = osp.dirname(_query(layout, root).get_data_info(0)['img_paths'][2])
    shutil.rmtree(folder)
    with pytest.raises(FileNotFoundError, match=re.escape(f"modality 'tir' not found: {folder}")):
        _query(layout, root)


def test_rgbnt100_missing_split_folder_is_named(copy_tree):
    root = copy_tree('rgbnt100')
    shutil.rmtree(osp.join(root, 'rgbir', 'query'))
    with pytest.raises(FileNotFoundError, match=re.escape("split 'query' not found")):
        _query('rgbnt100', root)


def _image_folders(layout, root):
    """Every folder of the query split that holds images."""
    return sorted({osp.dirname(p) for rec in _records(_query(layout, root)) for p in rec[0]})


@pytest.mark.parametrize('layout', LAYOUTS)
def test_unexpected_files_and_folders_are_ignored(copy_tree, layout):
    root = copy_tree(layout)
    before = _records(_query(layout, root))
    image_folders = _image_folders(layout, root)
    query_dir = osp.join(root, SPECS[layout]['query'])
    for folder in dict.fromkeys(image_folders + [query_dir, osp.dirname(image_folders[0])]):
        with open(osp.join(folder, 'README.txt'), 'w') as f:
            f.write('notes')
        for junk in ('.DS_Store', 'Thumbs.db', '._0001_c0001_000.jpg', 'desktop.ini'):
            with open(osp.join(folder, junk), 'wb') as f:
                f.write(b'\x00\x01junk')
    for folder in image_folders:
        os.makedirs(osp.join(folder, 'backup.jpg'))  # a folder named like an image
    os.makedirs(osp.join(image_folders[0], 'old', 'nested'))
    assert _records(_query(layout, root)) == before


@pytest.mark.parametrize('layout', LAYOUTS)
def test_unexpected_image_with_a_bad_name_is_named(copy_tree, layout):
    root = copy_tree(layout)
    info = _query(layout, root).get_data_info(0)
    for path in dict.fromkeys(info['img_paths']):
        shutil.copy(path, osp.join(osp.dirname(path), 'IMG 0001 copy.jpg'))
    name = SPECS[layout]['cls'].DATASET_NAME
    bad = osp.join(osp.dirname(info['img_paths'][0]), 'IMG 0001 copy.jpg')
    with pytest.raises(
        ValueError, match=re.escape(f"{name}: cannot parse image name 'IMG 0001")
    ) as e:
        _query(layout, root)
    assert bad in str(e.value)


@pytest.mark.parametrize('layout', SEPARATE_FILES)
def test_image_in_one_modality_only_is_named(copy_tree, layout):
    root = copy_tree(layout)
    info = _query(layout, root).get_data_info(0)
    stem, ext = osp.splitext(osp.basename(info['img_paths'][0]))
    extra = osp.join(osp.dirname(info['img_paths'][2]), f'{stem}_extra{ext}')
    shutil.copy(info['img_paths'][2], extra)
    with pytest.raises(FileNotFoundError, match=re.escape("missing 'rgb' image")) as e:
        _query(layout, root)
    assert extra in str(e.value)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_empty_split_folder_is_named(copy_tree, layout):
    root = copy_tree(layout)
    query_dir = osp.join(root, SPECS[layout]['query'])
    folders = _image_folders(layout, root)
    shutil.rmtree(query_dir)
    os.makedirs(query_dir)
    if layout == 'rgbnt201':  # keep the (empty) modality folders
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
    with pytest.raises(
        ValueError, match=re.escape(f"split 'query' is empty: no image under {query_dir}")
    ):
        _query(layout, root)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_symlink_loops_do_not_hang(copy_tree, layout):
    root = copy_tree(layout)
    before = _records(_query(layout, root))
    target = _query(layout, root).get_data_info(0)['img_paths'][-1]
    folder = osp.dirname(target)
    os.symlink('.', osp.join(folder, 'loop'))  # folder loops: folders are never walked
    os.symlink('..', osp.join(folder, 'up'))
    assert _records(_query(layout, root)) == before
    # an image replaced by a link to itself: listing it fails, naming it
    os.remove(target)
    os.symlink(osp.basename(target), target)
    with pytest.raises(OSError, match='Too many levels of symbolic links') as info:
        _query(layout, root)
    assert target in str(info.value)


@pytest.mark.parametrize('layout', ['msvr310', 'wmveid863'])
def test_id_folder_linking_to_the_split_folder(copy_tree, layout):
    root = copy_tree(layout)
    query_dir = osp.join(root, SPECS[layout]['query'])
    os.symlink('.', osp.join(query_dir, '9999'))  # query3/9999 -> query3
    with pytest.raises(FileNotFoundError, match=re.escape("id 9999: folder of modality 'rgb'")):
        _query(layout, root)


@pytest.mark.parametrize('layout', ['rgbnt201', 'rgbnt100', 'msvr310', 'wmveid863'])
def test_broken_link_named_like_an_image_is_named(copy_tree, layout):
    # Skipping it would silently drop the sample (RGBNT100) or unpair it.
    root = copy_tree(layout)
    target = _query(layout, root).get_data_info(0)['img_paths'][0]
    os.remove(target)
    os.symlink(osp.join(osp.dirname(target), 'gone', 'nowhere.jpg'), target)
    with pytest.raises(FileNotFoundError, match='broken symbolic link') as info:
        _query(layout, root)
    assert target in str(info.value)


@pytest.mark.parametrize('name', ['\u0661\u0662', '\u00b2', '12a'])
def test_id_folders_need_ascii_digits(copy_tree, name):
    root = copy_tree('msvr310')  # <split>/<id>/<modality>/ layout
    os.makedirs(osp.join(root, SPECS['msvr310']['query'], name))
    with pytest.raises(ValueError, match='cannot parse id folder') as info:
        _query('msvr310', root)
    assert repr(name) in str(info.value)
