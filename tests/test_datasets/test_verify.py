"""verify_dataset: every split listed, every image decoded once, all problems at once."""

import json
import os
import os.path as osp
import shutil
from collections import Counter

import cv2
import numpy as np
import pytest

import mmdmpt.datasets.verify as verify_module
from mmdmpt.datasets import RGBNT100, LoadMultiModalImages
from mmdmpt.datasets.verify import default_num_workers, verify_dataset
from mmdmpt.testing import make_synthetic

# Small trees, (height, width) of an image (RGBNT100: of a tile).
SIZES = {'rgbnt201': (64, 32), 'rgbnt100': (32, 64), 'msvr310': (32, 64), 'wmveid863': (32, 64)}
SPC = {'rgbnt201': 1, 'rgbnt100': 2, 'msvr310': 1, 'wmveid863': 2}
TYPES = {
    'rgbnt201': 'RGBNT201',
    'rgbnt100': 'RGBNT100',
    'msvr310': 'MSVR310',
    'wmveid863': 'WMVeID863',
}


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    """layout -> root of a small valid tree, written once."""
    base = tmp_path_factory.mktemp('verify')
    roots = {}
    for layout, (h, w) in SIZES.items():
        roots[layout] = str(base / layout)
        make_synthetic(
            roots[layout],
            layout=layout,
            num_ids=6,
            train_ids=3,
            samples_per_camera=SPC[layout],
            height=h,
            width=w,
            seed=7,
        )
    return roots


@pytest.fixture
def copy_tree(pristine, tmp_path):
    def make(layout):
        root = str(tmp_path / layout)
        shutil.copytree(pristine[layout], root)
        return root

    return make


def _cfg(layout, root, split, tile_width=None, **kwargs):
    loader = dict(type='LoadMultiModalImages')
    if tile_width is not None:
        loader['tile_width'] = tile_width
    return dict(type=TYPES[layout], data_root=root, split=split, pipeline=[loader], **kwargs)


def _all_splits(layout, root, tile_width=None):
    return {
        'train': _cfg(layout, root, 'train', tile_width),
        'test': _cfg(layout, root, 'test', tile_width),
    }


def _images_on_disk(root):
    return sorted(
        osp.join(d, n) for d, _, names in os.walk(root) for n in names if n.endswith('.jpg')
    )


def _build(layout, root, split, tile_width=None):
    from mmdmpt.registry import DATASETS

    return DATASETS.build(_cfg(layout, root, split, tile_width, serialize_data=False))


@pytest.mark.parametrize('layout', list(SIZES))
def test_clean_tree_of_each_layout_passes(pristine, layout):
    root = pristine[layout]
    tile = SIZES[layout][1] if layout == 'rgbnt100' else None
    report = verify_dataset(_all_splits(layout, root, tile), num_workers=2, progress=False)
    assert report.ok, report.format()
    assert report.bad_files == []
    assert [s.name for s in report.splits] == ['train', 'test']
    for s in report.splits:
        assert s.listing_error is None and s.bad_files == []
        assert s.num_samples == len(_build(layout, root, s.name))
        assert s.num_files > 0 and s.seconds > 0
    # every image of the tree is read, each once
    assert report.num_files == len(_images_on_disk(root))
    assert sum(s.num_decoded for s in report.splits) == report.num_files
    assert 'OK:' in report.format()
    assert report.num_workers == 2


def _truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[: len(data) // 2])
    return data[: len(data) // 2]


def _empty(path):
    open(path, 'wb').close()


def _text(path):
    with open(path, 'w') as f:
        f.write('this is not an image\n')


def _strip(path, width, height):
    img = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode('.jpg', img)
    assert ok
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def _files(layout, root, split):
    """The img_paths of every sample of a split, in order."""
    ds = _build(layout, root, split)
    return [ds.get_data_info(i)['img_paths'] for i in range(len(ds))]


def test_damaged_trees_list_every_problem_at_once(copy_tree):
    r201 = copy_tree('rgbnt201')
    r100 = copy_tree('rgbnt100')
    train = _files('rgbnt201', r201, 'train')
    test = _files('rgbnt201', r201, 'test')
    strips = [p[0] for p in _files('rgbnt100', r100, 'test')]
    h, w = SIZES['rgbnt100']
    # all in the train split of RGBNT201, the missing file making it unlistable
    truncated = train[0][0]  # rgb
    empty = train[1][1]  # nir
    text = train[2][2]  # tir
    missing = train[3][1]  # nir
    truncated_test = test[0][2]
    wrong_width = strips[0]
    truncated_strip = strips[-1]
    _truncate(truncated)
    _empty(empty)
    _text(text)
    os.remove(missing)
    _truncate(truncated_test)
    _strip(wrong_width, 4 * w, h)
    _truncate(truncated_strip)

    datasets = {
        'train': _cfg('rgbnt201', r201, 'train'),
        'test': _cfg('rgbnt201', r201, 'test'),
        'vehicles': _cfg('rgbnt100', r100, 'test', tile_width=w),
    }
    report = verify_dataset(datasets, num_workers=2, progress=False)
    assert not report.ok
    found = {b.path: b.reason for b in report.bad_files}
    assert set(found) == {
        truncated,
        empty,
        text,
        missing,
        truncated_test,
        wrong_width,
        truncated_strip,
    }
    assert found[truncated] == 'truncated JPEG (no end-of-image marker)'
    assert found[empty] == 'the file is empty'
    assert found[text] == 'corrupt or not an image'
    assert found[missing] == (f"missing 'nir' image (paired by file name with {train[3][0]})")
    assert found[truncated_test] == 'truncated JPEG (no end-of-image marker)'
    assert found[wrong_width] == (
        f'strip is {4 * w} px wide; expected 3 tiles x {w} px = {3 * w} px'
    )
    assert found[truncated_strip] == 'truncated JPEG (no end-of-image marker)'

    splits = {s.name: s for s in report.splits}
    # the missing file stops the listing of 'train': reported, naming the split and the
    # file, and the split's files are still decoded
    assert splits['train'].num_samples is None
    assert "split 'train'" in splits['train'].listing_error
    assert missing in splits['train'].listing_error
    assert {b.path for b in splits['train'].bad_files} == {truncated, empty, text, missing}
    assert splits['train'].num_files == len(train) * 3 - 1
    # 'test' lists: its samples share files (query and gallery), each read once
    assert splits['test'].listing_error is None
    assert splits['test'].num_samples == len(test)
    assert splits['test'].num_files == len({p for paths in test for p in paths})
    assert [b.path for b in splits['test'].bad_files] == [truncated_test]
    assert {b.path for b in splits['vehicles'].bad_files} == {wrong_width, truncated_strip}

    text_report = report.format()
    for path, reason in found.items():
        assert f'{path}: {reason}' in text_report
    listing_line = next(line for line in text_report.splitlines() if '[train] ' in line)
    assert missing in listing_line
    assert '1 split(s) could not be listed' in text_report
    assert 'OK:' not in text_report
    json.dumps(report.to_dict())
    assert report.to_dict()['ok'] is False

    # the same result with one thread
    again = verify_dataset(datasets, num_workers=1, progress=False)
    assert [(b.path, b.reason) for b in again.bad_files] == [
        (b.path, b.reason) for b in report.bad_files
    ]


def _jpeg_without_end_marker_that_opencv_decodes(shape):
    """A grey JPEG cut just before its end-of-image marker that OpenCV still decodes."""
    for seed in range(200):
        noise = np.random.default_rng(seed).integers(0, 255, shape).astype(np.uint8)
        ok, buf = cv2.imencode('.jpg', cv2.GaussianBlur(noise, (0, 0), 3))
        assert ok
        cut = buf.tobytes()[:-2]
        if cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None:
            return cut
    raise AssertionError('OpenCV refuses every JPEG cut before its end marker here')


def test_truncated_jpeg_is_caught_also_when_opencv_decodes_it(copy_tree):
    root = copy_tree('wmveid863')
    samples = _files('wmveid863', root, 'test')
    # a file cut in half (this OpenCV refuses most of these) ...
    half = samples[0][0]
    _truncate(half)
    # ... and one OpenCV decodes without an error: only the marker check catches it
    cut = samples[1][1]
    with open(cut, 'wb') as f:
        f.write(_jpeg_without_end_marker_that_opencv_decodes(SIZES['wmveid863']))
    report = verify_dataset(_cfg('wmveid863', root, 'test'), num_workers=2, progress=False)
    assert sorted((b.path, b.reason) for b in report.bad_files) == sorted(
        [
            (half, 'truncated JPEG (no end-of-image marker)'),
            (cut, 'truncated JPEG (no end-of-image marker)'),
        ]
    )


def test_truncated_png_and_unreadable_files(copy_tree):
    root = copy_tree('rgbnt100')
    h, w = SIZES['rgbnt100']
    query = osp.join(root, 'rgbir', 'query')
    img = np.random.default_rng(0).integers(0, 255, (h, 3 * w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode('.png', img)
    assert ok
    png = osp.join(query, '0004_c0001_900.png')
    with open(png, 'wb') as f:
        f.write(buf.tobytes()[:-20])  # IEND cut off
    good_png = osp.join(query, '0004_c0001_901.png')
    with open(good_png, 'wb') as f:
        f.write(buf.tobytes())
    loop = osp.join(query, '0004_c0001_902.jpg')
    os.symlink(osp.basename(loop), loop)  # a link to itself: listing fails, naming it
    report = verify_dataset(_cfg('rgbnt100', root, 'query', w), num_workers=2, progress=False)
    found = {b.path: b.reason for b in report.bad_files}
    assert found[png] == 'truncated PNG (no IEND chunk)'
    assert 'Too many levels of symbolic links' in found[loop]
    assert good_png not in found
    assert loop in report.splits[0].listing_error


def test_listing_errors_are_reported_not_raised(copy_tree, tmp_path):
    root = copy_tree('wmveid863')
    samples = _files('wmveid863', root, 'query')
    truncated = samples[1][2]
    _truncate(truncated)
    renamed = []
    for path in samples[0]:  # an unparsable name, in every modality
        new = osp.join(osp.dirname(path), 'IMG 0001 copy.jpg')
        os.rename(path, new)
        renamed.append(new)
    datasets = {
        'query': _cfg('wmveid863', root, 'query'),
        'absent': _cfg('wmveid863', str(tmp_path / 'nowhere'), 'test'),
        'unknown': dict(type='NoSuchDataset', data_root=root),
        'gallery': _cfg('wmveid863', root, 'gallery'),
    }
    report = verify_dataset(datasets, num_workers=2, progress=False)
    splits = {s.name: s for s in report.splits}
    assert "cannot parse image name 'IMG 0001 copy.jpg'" in splits['query'].listing_error
    # the unlistable split's files are still decoded: the truncated one is named
    assert [b.path for b in splits['query'].bad_files] == [truncated]
    assert splits['query'].num_files == 3 * len(samples)
    assert 'data_root not found' in splits['absent'].listing_error
    assert str(tmp_path / 'nowhere') in splits['absent'].listing_error
    assert 'NoSuchDataset' in splits['unknown'].listing_error
    assert splits['gallery'].ok and splits['gallery'].num_samples > 0
    assert not report.ok
    text = report.format()
    assert '3 split(s) could not be listed' in text
    for name in ('query', 'absent', 'unknown'):
        assert f'[{name}] ' in text


def test_missing_modality_folder_and_files_all_named(copy_tree):
    root = copy_tree('msvr310')
    samples = _files('msvr310', root, 'train')
    by_id = {}
    for paths in samples:
        by_id.setdefault(osp.dirname(osp.dirname(paths[0])), []).append(paths)
    id_dirs = sorted(by_id)
    gone_folder = osp.join(id_dirs[0], 'th')
    shutil.rmtree(gone_folder)
    missing = [by_id[id_dirs[1]][0][0], by_id[id_dirs[2]][0][2], by_id[id_dirs[2]][1][1]]
    for path in missing:
        os.remove(path)
    report = verify_dataset(_cfg('msvr310', root, 'train'), num_workers=2, progress=False)
    found = {b.path: b.reason for b in report.bad_files}
    assert found == {
        gone_folder: "folder of modality 'tir' not found",
        missing[0]: f"missing 'rgb' image (paired by file name with {by_id[id_dirs[1]][0][1]})",
        missing[1]: f"missing 'tir' image (paired by file name with {by_id[id_dirs[2]][0][0]})",
        missing[2]: f"missing 'nir' image (paired by file name with {by_id[id_dirs[2]][1][0]})",
    }


@pytest.mark.parametrize('layout', ['rgbnt100', 'msvr310'])
def test_verdict_agrees_with_the_training_loader(copy_tree, layout):
    root = copy_tree(layout)
    h, w = SIZES[layout]
    samples = _files(layout, root, 'test')
    files = sorted({p for paths in samples for p in paths})
    rng = np.random.default_rng(3)
    damage = [_truncate, _empty, _text]
    for i, path in enumerate(rng.choice(files, size=6, replace=False)):
        if layout == 'rgbnt100' and i == 0:
            _strip(str(path), 3 * w + 3, h)  # divisible by 3, but not 3 tiles of w
        else:
            damage[i % 3](str(path))
    report = verify_dataset(
        _cfg(layout, root, 'test', w if layout == 'rgbnt100' else None),
        num_workers=3,
        progress=False,
    )
    bad = {b.path for b in report.bad_files}
    assert len(bad) == 6
    ds = _build(layout, root, 'test', w if layout == 'rgbnt100' else None)
    loader = LoadMultiModalImages(tile_width=w if layout == 'rgbnt100' else None)
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        if bad & set(info['img_paths']):
            with pytest.raises(ValueError):
                loader(dict(info))
        else:
            assert len(loader(dict(info))['imgs']) == 3


def test_strip_width_without_tile_width_must_divide(copy_tree):
    root = copy_tree('rgbnt100')
    h, w = SIZES['rgbnt100']
    strips = [p[0] for p in _files('rgbnt100', root, 'query')]
    _strip(strips[0], 3 * w + 1, h)
    _strip(strips[1], 3 * w + 3, h)  # a third of it is still a tile: accepted
    report = verify_dataset(_cfg('rgbnt100', root, 'query'), num_workers=2, progress=False)
    assert [(b.path, b.reason) for b in report.bad_files] == [
        (
            strips[0],
            f'strip is {3 * w + 1} px wide; expected a multiple of 3 (3 tiles of equal width)',
        )
    ]


def test_each_distinct_file_is_decoded_once(pristine, monkeypatch):
    calls = Counter()
    real = verify_module.decode_bgr

    def counting(buf, path, check_complete=True):
        calls[path] += 1
        return real(buf, path, check_complete)

    monkeypatch.setattr(verify_module, 'decode_bgr', counting)
    r201, r100 = pristine['rgbnt201'], pristine['rgbnt100']
    datasets = {
        'train': _cfg('rgbnt201', r201, 'train'),
        'val': _cfg('rgbnt201', r201, 'test'),
        'test': _cfg('rgbnt201', r201, 'test'),  # equal to 'val': checked once
        'query': _cfg('rgbnt201', r201, 'query'),  # its files were decoded for 'val'
        'vehicles': _cfg('rgbnt100', r100, 'test'),  # 3 modalities per strip
    }
    report = verify_dataset(datasets, num_workers=3, progress=False)
    assert report.ok
    assert [s.name for s in report.splits] == ['train', 'val, test', 'query', 'vehicles']
    expected = _images_on_disk(r201) + [
        p for p in _images_on_disk(r100) if '/bounding_box_train/' not in p
    ]
    assert sorted(calls) == sorted(expected)
    assert set(calls.values()) == {1}
    splits = {s.name: s for s in report.splits}
    assert splits['query'].num_decoded == 0 and splits['query'].num_files > 0
    assert splits['vehicles'].num_files == splits['vehicles'].num_samples
    assert report.num_files == len(expected)


def test_built_datasets_and_wrappers(pristine):
    root = pristine['rgbnt100']
    h, w = SIZES['rgbnt100']
    # a built dataset: the tile width of its own pipeline applies
    ds = RGBNT100(root, split='query', pipeline=[LoadMultiModalImages(tile_width=w + 1)])
    report = verify_dataset([ds], num_workers=2, progress=False)
    assert report.splits[0].name == 'dataset 0'
    assert len(report.bad_files) == len(ds)
    assert {b.reason for b in report.bad_files} == {
        f'strip is {3 * w} px wide; expected 3 tiles x {w + 1} px = {3 * (w + 1)} px'
    }
    # a wrapper config is unwrapped
    wrapped = dict(
        type='ConcatDataset',
        datasets=[_cfg('rgbnt100', root, 'query', w), _cfg('rgbnt100', root, 'gallery', w)],
    )
    report = verify_dataset({'train': wrapped}, num_workers=2, progress=False)
    assert report.ok
    assert [s.name for s in report.splits] == ['train[0]', 'train[1]']


def test_progress_bar_goes_to_stderr(pristine, capsys):
    root = pristine['rgbnt100']
    cfg = _cfg('rgbnt100', root, 'query')
    report = verify_dataset(cfg, num_workers=2, progress=True)
    n = report.splits[0].num_files
    out, err = capsys.readouterr()
    assert f'{n}/{n}' in err and f'{n}/{n}' not in out
    verify_dataset(cfg, num_workers=2, progress=False)
    assert f'{n}/{n}' not in capsys.readouterr().err


def test_num_workers(pristine):
    assert 1 <= default_num_workers() <= 16
    with pytest.raises(ValueError, match='num_workers must be >= 1, got 0'):
        verify_dataset(_cfg('rgbnt100', pristine['rgbnt100'], 'query'), num_workers=0)
