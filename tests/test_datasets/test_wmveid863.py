import hashlib
import os
import os.path as osp
import re
import shutil

import numpy as np
import pytest

import mmdmpt.datasets.base as base
from mmdmpt.datasets import WMVeID863
from mmdmpt.datasets.wmveid863 import (
    parse_wmveid863_flat_name,
    parse_wmveid863_name,
    resolve_wmveid863_layout,
)
from mmdmpt.testing import WMVEID863_LAYOUTS, make_synthetic
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError

VARIANT_ARGS = dict(
    layout='wmveid863', num_ids=6, train_ids=3, samples_per_camera=2, seed=2, height=32, width=64
)


def test_splits(trees):
    root, summary = trees['wmveid863']
    train = WMVeID863(root, split='train')
    assert len(train) == 6 * 3 * 2
    assert train.metainfo['has_scenes'] is False
    for i in range(len(train)):
        info = train.get_data_info(i)
        name = osp.basename(info['img_paths'][0])
        m = re.match(r'^\d{4}_v(\d)_n(\d)_\d{3}\.jpg$', name)
        assert info['camid'] == int(m.group(1)) and info['night'] == int(m.group(2))
        assert 'sceneid' not in info
    test = WMVeID863(root, split='test')
    infos = [test.get_data_info(i) for i in range(len(test))]
    nq = 6 * 3
    assert [i['is_query'] for i in infos] == [True] * nq + [False] * (len(infos) - nq)
    assert {i['gt_label'] for i in infos} == set(summary['test_ids'])
    assert all(i['img_paths'][0].split(osp.sep)[-4] == 'test' for i in infos[nq:])


def _hand_tree(tmp_path, writer, flat=False):
    """One id whose vis/ni/th files hold the index of their name as value."""
    root = tmp_path / 'WMVeID863'
    if flat:
        names = ['0005_cam1_n0_000.jpg', '0005_cam2_n1_001.jpg', '0005_cam3_n0_002.jpg']
    else:
        names = ['0005_v0_n0_000.jpg', '0005_v1_n1_001.jpg', '0005_v2_n0_002.jpg']
    for split in ('train', 'query', 'test'):
        # written in different orders per modality
        for f, order in (('vis', (0, 1, 2)), ('ni', (2, 0, 1)), ('th', (1, 2, 0))):
            folder = root / split / f if flat else root / split / '0005' / f
            for k in order:
                writer(folder / names[k], np.full((16, 16), 40 * (k + 1)))
    return root, names


@pytest.mark.parametrize('flat', [False, True])
def test_pairing_by_name_not_listing_order(tmp_path, writer, monkeypatch, flat):
    root, names = _hand_tree(tmp_path, writer, flat)
    real = os.scandir

    class Reversed:
        """os.scandir whose listing order differs per modality folder."""

        def __init__(self, path):
            self.entries = list(real(path))
            if osp.basename(str(path)) == 'ni':
                self.entries.reverse()
            elif osp.basename(str(path)) == 'th':
                self.entries = self.entries[1:] + self.entries[:1]

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *args):
            return False

    monkeypatch.setattr(base.os, 'scandir', Reversed)
    ds = WMVeID863(str(root), split='train', pipeline=[dict(type='LoadMultiModalImages')])
    assert len(ds) == 3
    assert ds.resolved_layout == ('flat' if flat else 'id_folders')
    for i in range(3):
        out = ds[i]
        assert len({osp.basename(p) for p in out['img_paths']}) == 1
        k = names.index(osp.basename(out['img_paths'][0]))
        assert out['camid'] == k and out['night'] == k % 2
        for img in out['imgs']:
            assert abs(int(img.mean()) - 40 * (k + 1)) <= 2


def test_missing_file_named(tmp_path, writer):
    root, names = _hand_tree(tmp_path, writer)
    os.remove(root / 'query' / '0005' / 'th' / names[1])
    path = osp.join(str(root), 'query', '0005', 'th', names[1])
    with pytest.raises(FileNotFoundError, match=re.escape(f"missing 'tir' image {path}")):
        WMVeID863(str(root), split='query')
    shutil.rmtree(root / 'test' / '0005' / 'ni')
    with pytest.raises(FileNotFoundError, match="folder of modality 'nir' not found"):
        WMVeID863(str(root), split='gallery')


def test_name_without_fields(tmp_path, writer):
    root, _ = _hand_tree(tmp_path, writer)
    for f in ('vis', 'ni', 'th'):
        writer(root / 'train' / '0005' / f / '0005_v3_007.jpg', np.zeros((16, 16)))
    with pytest.raises(
        ValueError, match=r"'0005_v3_007.jpg'.*no night flag n<d>.*expected the pattern"
    ):
        WMVeID863(str(root))


def test_name_error_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match='no camera field v<d>'):
        parse_wmveid863_name('0005_n1_003.jpg', '/r/0005_n1_003.jpg')


# --------------------------------------------------------------------------- #
# The three public layouts
# --------------------------------------------------------------------------- #
@pytest.fixture(scope='module')
def variants(tmp_path_factory):
    """variant -> root: the same synthetic identities in each public layout."""
    base_dir = tmp_path_factory.mktemp('wmveid863_variants')
    roots = {}
    for variant in WMVEID863_LAYOUTS:
        roots[variant] = str(base_dir / variant)
        make_synthetic(roots[variant], wmveid863_layout=variant, **VARIANT_ARGS)
    return roots


def _load(root, split='test', **kwargs):
    return WMVeID863(root, split=split, serialize_data=False, **kwargs)


def _md5(path):
    with open(path, 'rb') as f:
        return hashlib.md5(f.read()).hexdigest()


def _samples(ds):
    """Per sample: id, camera, night, query flag and the bytes of each modality file."""
    out = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        out.append(
            (
                info['gt_label'],
                info['camid'],
                info.get('night'),
                info['is_query'],
                tuple(_md5(p) for p in info['img_paths']),
            )
        )
    return out


def test_variants_written_as_published(variants):
    assert sorted(os.listdir(variants['id_folders'])) == [
        'query',
        'synthetic_meta.json',
        'test',
        'train',
    ]
    assert sorted(os.listdir(osp.join(variants['flat'], 'test'))) == ['ni', 'th', 'vis']
    names = os.listdir(osp.join(variants['flat'], 'test', 'vis'))
    assert names and all(re.fullmatch(r'\d{4}_cam[1-6]_n[01]_\d{3}\.jpg', n) for n in names)
    assert 'gallery' in os.listdir(variants['id_folders_gallery'])
    assert 'test' not in os.listdir(variants['id_folders_gallery'])


@pytest.mark.parametrize(
    'variant, structure, gallery',
    [
        ('id_folders', 'id_folders', 'test'),
        ('flat', 'flat', 'test'),
        ('id_folders_gallery', 'id_folders', 'gallery'),
    ],
)
def test_layout_detected(variants, variant, structure, gallery):
    root = variants[variant]
    assert resolve_wmveid863_layout(root) == (structure, gallery)
    ds = _load(root)
    assert (ds.resolved_layout, ds.resolved_gallery_folder) == (structure, gallery)
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    gallery_paths = [i['img_paths'][0] for i in infos if not i['is_query']]
    assert gallery_paths
    depth = 3 if structure == 'flat' else 4  # <split>/[<vid>/]vis/<name>
    assert all(p.split(osp.sep)[-depth] == gallery for p in gallery_paths)
    assert all(i['night'] in (0, 1) for i in infos)


def test_all_layouts_give_the_same_samples(variants):
    for split in ('train', 'query', 'gallery'):
        got = {v: _load(root, split) for v, root in variants.items()}
        samples = {v: _samples(ds) for v, ds in got.items()}
        reference = samples['id_folders']
        assert len(reference) == {'train': 18, 'query': 9, 'gallery': 9}[split]
        # every camera of the generator (0-5) is read 0-based in every layout
        assert {s[1] for s in reference} <= set(range(6))
        for variant, found in samples.items():
            assert found == reference, (split, variant)
            assert got[variant].metainfo['classes'] == got['id_folders'].metainfo['classes']
    # pairing: the three files of a sample are the same bytes in every layout, and a
    # sample's files all differ (one file per modality)
    assert all(len(set(s[4])) == 3 for s in reference)


def test_forced_layout(variants):
    flat, id_folders = variants['flat'], variants['id_folders']
    assert _samples(_load(flat, layout='flat')) == _samples(_load(flat))
    with pytest.raises(DataError) as info:
        _load(flat, layout='id_folders')
    message = str(info.value)
    assert f"layout='id_folders' was given but {osp.join(flat, 'train')} holds the 'flat'" in (
        message
    )
    assert "use layout='flat' or layout='auto'" in message
    with pytest.raises(DataError, match=r"layout='flat' was given but .* 'id_folders' layout"):
        _load(id_folders, layout='flat')
    # a forced gallery folder that is not there is named, with the expected layouts
    with pytest.raises(DataNotFoundError) as info:
        _load(id_folders, split='gallery', gallery_folder='gallery')
    assert f"folder of split 'gallery' not found: {osp.join(id_folders, 'gallery')}" in str(
        info.value
    )
    assert 'test/ (or gallery/, not both)' in str(info.value)
    # forcing the gallery folder of the gallery/ variant
    ds = _load(variants['id_folders_gallery'], split='gallery', gallery_folder='gallery')
    assert _samples(ds) == _samples(_load(id_folders, split='gallery'))


def test_bad_options():
    with pytest.raises(ConfigError, match=r"layout='folders' is not one of \('auto', 'id_f"):
        WMVeID863('anywhere', layout='folders')
    with pytest.raises(ConfigError, match="gallery_folder='bounding_box_test' is not one of"):
        WMVeID863('anywhere', gallery_folder='bounding_box_test')


def test_ambiguous_tree(variants, tmp_path):
    root = tmp_path / 'WMVeID863'
    shutil.copytree(variants['id_folders'], root)
    shutil.copytree(root / 'test', root / 'gallery')
    with pytest.raises(DataError) as info:
        _load(str(root), split='train')
    message = str(info.value)
    assert f'ambiguous tree under {root}: both {root / "test"} and {root / "gallery"} exist' in (
        message
    )
    assert "gallery_folder='test' or gallery_folder='gallery'" in message
    ds = _load(str(root), split='gallery', gallery_folder='test')
    assert _samples(ds) == _samples(_load(variants['id_folders'], split='gallery'))


def test_mixed_trees(variants, tmp_path):
    # flat train/ next to id-folder query/ and test/
    root = tmp_path / 'mixed'
    shutil.copytree(variants['id_folders'], root)
    shutil.rmtree(root / 'train')
    shutil.copytree(osp.join(variants['flat'], 'train'), root / 'train')
    with pytest.raises(DataError) as info:
        _load(str(root), split='query')
    message = str(info.value)
    assert f'mixed tree under {root}' in message
    assert f"{root / 'train'} looks 'flat'" in message
    assert f"{root / 'query'} looks 'id_folders'" in message
    assert 'expected train/, query/ and test/' in message
    # a forced layout does not make a mixed tree readable: the odd folder is named
    for split in ('train', 'query'):
        with pytest.raises(DataError, match=re.escape(f"{root / 'train'} holds the 'flat'")):
            _load(str(root), split=split, layout='id_folders')
    # one split folder holding both kinds of folders
    both = tmp_path / 'both'
    shutil.copytree(variants['flat'], both)
    vid = sorted(os.listdir(osp.join(variants['id_folders'], 'query')))[0]
    shutil.copytree(osp.join(variants['id_folders'], 'query', vid), both / 'query' / vid)
    with pytest.raises(DataError) as info:
        _load(str(both), split='train')
    assert f'cannot tell the layout of {both / "query"}: it holds both' in str(info.value)
    assert len(_load(str(both), split='query', layout='flat')) == 9
    # neither kind
    odd = tmp_path / 'odd'
    shutil.copytree(variants['flat'], odd)
    for f in ('vis', 'ni', 'th'):
        os.rename(odd / 'test' / f, odd / 'test' / f.upper())
    with pytest.raises(DataError) as info:
        _load(str(odd), split='train')
    assert f"cannot tell the layout of {odd / 'test'}: its folders ['NI', 'TH', 'VIS']" in str(
        info.value
    )


def test_missing_tree_names_expected_layouts(tmp_path):
    with pytest.raises(DataNotFoundError, match=r'data_root not found: .*nowhere.*expected train/'):
        WMVeID863(str(tmp_path / 'nowhere'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataNotFoundError) as info:
        WMVeID863(str(tmp_path / 'empty'))
    assert f"folder of split 'train' not found: {tmp_path / 'empty' / 'train'}" in str(info.value)
    assert "(layout 'id_folders') or {vis,ni,th}/<id>_cam<c>_<...>.jpg (layout 'flat')" in str(
        info.value
    )


def test_flat_name_parser():
    assert parse_wmveid863_flat_name('0005_cam2_n1_004.jpg') == dict(gt_label=5, camid=1, night=1)
    # night is read only from a whole n<d> field, and is optional
    assert parse_wmveid863_flat_name('000123_cam1_0_07.jpg') == dict(gt_label=123, camid=0)
    assert parse_wmveid863_flat_name('0005_cam3_xn1_n0.jpg') == dict(gt_label=5, camid=2, night=0)
    assert parse_wmveid863_flat_name('0005_cam12.jpg') == dict(gt_label=5, camid=11)
    with pytest.raises(DataError, match=r"'0005_cam0_1.jpg' at /r/0005_cam0_1.jpg \(camera 0"):
        parse_wmveid863_flat_name('0005_cam0_1.jpg', '/r/0005_cam0_1.jpg')
    for bad in ('0005_v2_n1_004.jpg', 'a005_cam1_1.jpg', '0005_cam_1.jpg', '0005cam1.jpg'):
        with pytest.raises(DataError, match=r"expected the pattern '\{id\}_cam\{camera from 1\}"):
            parse_wmveid863_flat_name(bad)


def test_flat_without_night_and_missing_file(tmp_path, writer):
    root = tmp_path / 'WMVeID863'
    names = ['0007_cam2_000.jpg', '0007_cam4_001.jpg']
    for split in ('train', 'query', 'test'):
        for f in ('vis', 'ni', 'th'):
            for name in names:
                writer(root / split / f / name, np.zeros((16, 16)))
    ds = _load(str(root), split='test')
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [(i['gt_label'], i['camid'], i['is_query']) for i in infos] == [
        (7, 1, True),
        (7, 3, True),
        (7, 1, False),
        (7, 3, False),
    ]
    assert all('night' not in i for i in infos)
    os.remove(root / 'query' / 'ni' / names[1])
    path = osp.join(str(root), 'query', 'ni', names[1])
    with pytest.raises(FileNotFoundError, match=re.escape(f"missing 'nir' image {path}")):
        _load(str(root), split='query')
    # modalities= reads only the folders asked for
    assert len(_load(str(root), split='query', modalities=('rgb', 'tir'))) == 2
