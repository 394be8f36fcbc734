"""The synthetic generator: determinism, layouts, variants, families, user errors."""

import ast
import hashlib
import json
import os
import os.path as osp
import re

import numpy as np
import pytest

from mmdmpt.datasets import wmveid863
from mmdmpt.testing import load_script, make_synthetic, synthetic
from mmdmpt.utils.errors import ConfigError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TESTING = osp.join(ROOT, 'mmdmpt', 'testing')


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
    """layout -> (root, summary) of two small trees (as tests/test_datasets/conftest.py)."""
    base = tmp_path_factory.mktemp('synthetic')
    args = dict(num_ids=12, train_ids=6, samples_per_camera=2, seed=3, family_size=3)
    out = {}
    for layout, (h, w) in {'rgbnt201': (64, 32), 'rgbnt100': (32, 64)}.items():
        root = str(base / layout)
        out[layout] = (root, make_synthetic(root, layout=layout, height=h, width=w, **args))
    return out


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = osp.join(dirpath, f)
            with open(path, 'rb') as fh:
                out[osp.relpath(path, root)] = hashlib.md5(fh.read()).hexdigest()
    return out


def _cli():
    return load_script(osp.join(ROOT, 'tools', 'dataset_converters', 'make_synthetic.py'))


def test_deterministic_bytes(tmp_path):
    args = dict(layout='msvr310', num_ids=6, train_ids=3, samples_per_camera=1, height=32, width=64)
    make_synthetic(str(tmp_path / 'a'), seed=7, **args)
    make_synthetic(str(tmp_path / 'b'), seed=7, **args)
    make_synthetic(str(tmp_path / 'c'), seed=8, **args)
    a, b, c = (_digest(tmp_path / k) for k in 'abc')
    assert a == b and len(a) > 10
    assert a != c


def _meta(root):
    with open(osp.join(root, 'synthetic_meta.json')) as f:
        return json.load(f)


def test_cli_and_id_offset(tmp_path, capsys):
    cli = _cli()
    common = [
        '--layout',
        'rgbnt201',
        '--num-ids',
        '6',
        '--train-ids',
        '0.5',
        '--samples-per-camera',
        '1',
    ]
    common += ['--height', '64', '--width', '32']
    assert cli.main(common + ['--out', str(tmp_path / 'a')]) == 0
    assert 'rgbnt201: 3 train ids, 3 test ids' in capsys.readouterr().out
    cli.main(common + ['--out', str(tmp_path / 'b'), '--id-offset', '1001'])
    s1, s2 = _meta(tmp_path / 'a'), _meta(tmp_path / 'b')
    assert set(s1['train_ids']) | set(s1['test_ids']) == set(range(1, 7))
    assert set(s2['train_ids']) | set(s2['test_ids']) == set(range(1001, 1007))
    assert not set(s1['train_ids']) & set(s1['test_ids'])
    assert sorted(os.listdir(tmp_path / 'a')) == ['synthetic_meta.json', 'test', 'train_171']
    assert sorted(os.listdir(tmp_path / 'a' / 'test')) == ['NI', 'RGB', 'TI']
    # a disjoint identity set also looks different
    ids1 = synthetic.make_identities(6, 3, 'person', 0, 1)
    ids2 = synthetic.make_identities(6, 3, 'person', 0, 1001)
    assert [i['colours'] for i in ids1] != [i['colours'] for i in ids2]
    with pytest.raises(ConfigError, match='already exists and is not empty.*--overwrite'):
        cli.main(common + ['--out', str(tmp_path / 'a')])
    before = _digest(tmp_path / 'a')
    cli.main(common + ['--out', str(tmp_path / 'a'), '--overwrite'])
    assert _digest(tmp_path / 'a') == before
    assert (
        cli.parse_args(['--layout', 'msvr310', '--out', 'x', '--train-ids', '12']).train_ids == 12
    )


def test_wmveid863_variants(tmp_path):
    args = dict(layout='wmveid863', num_ids=6, train_ids=3, samples_per_camera=2, height=32)
    args.update(width=64, seed=4)
    trees = {}
    for variant in synthetic.WMVEID863_LAYOUTS:
        root = tmp_path / variant
        summary = make_synthetic(str(root), wmveid863_layout=variant, **args)
        trees[variant] = _digest(root)
        assert summary.get('wmveid863_layout', 'id_folders') == variant
    default = _digest_of_call(tmp_path / 'default', **args)
    # the default is the id-folder tree, byte for byte (metadata included)
    assert default == trees['id_folders']
    assert 'wmveid863_layout' not in _meta(tmp_path / 'default')
    base = {k: v for k, v in trees['id_folders'].items() if k.endswith('.jpg')}
    assert len(base) == 6 * 3 * 2 * 3  # ids x cameras x samples x modalities
    assert all(k.split(os.sep)[1].isdigit() for k in base)
    name_re = re.compile(r'(\d{4})_v(\d)_n(\d)_(\d{3})\.jpg')
    for variant in ('flat', 'id_folders_gallery'):
        files = {k: v for k, v in trees[variant].items() if k.endswith('.jpg')}
        expected = {}
        for key, md5 in base.items():
            split, vid, modality, name = key.split(os.sep)
            if variant == 'flat':
                pid, cam, night, idx = name_re.fullmatch(name).groups()
                assert pid == vid
                name = f'{pid}_cam{int(cam) + 1}_n{night}_{idx}.jpg'
                key = os.sep.join([split, modality, name])
            elif split == 'test':
                key = os.sep.join(['gallery', vid, modality, name])
            expected[key] = md5
        assert files == expected, variant
    tops = {variant: {k.split(os.sep)[0] for k in tree} for variant, tree in trees.items()}
    assert tops['flat'] == {'train', 'query', 'test', 'synthetic_meta.json'}
    assert tops['id_folders_gallery'] == {'train', 'query', 'gallery', 'synthetic_meta.json'}


def _digest_of_call(root, **args):
    make_synthetic(str(root), **args)
    return _digest(root)


def test_wmveid863_variant_errors_and_overwrite(tmp_path):
    args = dict(layout='wmveid863', num_ids=6, train_ids=3, samples_per_camera=2, height=32)
    args['width'] = 64
    with pytest.raises(ConfigError, match="unknown wmveid863_layout 'gallery'"):
        make_synthetic(str(tmp_path / 'x'), wmveid863_layout='gallery', **args)
    with pytest.raises(ConfigError, match="only applies to layout='wmveid863'"):
        make_synthetic(str(tmp_path / 'x'), layout='msvr310', wmveid863_layout='flat')
    root = tmp_path / 'w'
    make_synthetic(str(root), **args)
    # test/ of the first tree would make the gallery ambiguous: it counts as occupied ...
    with pytest.raises(FileExistsError, match='test'):
        make_synthetic(str(root), wmveid863_layout='id_folders_gallery', **args)
    # ... and is removed on overwrite
    make_synthetic(str(root), wmveid863_layout='id_folders_gallery', overwrite=True, **args)
    assert sorted(os.listdir(root)) == ['gallery', 'query', 'synthetic_meta.json', 'train']


def test_families_differ_in_one_modality_only():
    for kind in ('person', 'vehicle'):
        idents = synthetic.make_identities(30, 3, kind, 0, 1)
        types = set()
        for f in range(10):
            members = [i for i in idents if i['family'] == f]
            luts = [synthetic.identity_luts(i, kind) for i in members]
            ftype = members[0]['family_type']
            types.add(ftype)
            assert len({str(i['shape']) for i in members}) == 1
            varying = {'rgb': 0, 'nir': 1, 'tir': 2}[ftype]
            for a in range(3):
                for b in range(a + 1, 3):
                    for m in range(3):
                        same = np.array_equal(luts[a][m], luts[b][m])
                        assert same == (m != varying), (kind, ftype, m)
        assert types == {'rgb', 'nir', 'tir'}


def test_images_and_errors(trees, tmp_path):
    root, summary = trees['rgbnt100']
    import cv2

    strip = cv2.imread(
        osp.join(root, 'rgbir', 'query', os.listdir(osp.join(root, 'rgbir', 'query'))[0])
    )
    assert strip.shape == (32, 3 * 64, 3)
    tiles = strip[:, :64], strip[:, 64:128], strip[:, 128:]
    # NIR / TIR tiles are grey, the RGB tile is not
    nir = tiles[1][:, 8:-8].astype(int)  # interior: chroma subsampling blurs tile borders
    assert np.abs(nir - nir[..., :1]).max() <= 3
    assert np.abs(tiles[0].astype(int) - tiles[0][..., :1]).max() > 30
    root201, _ = trees['rgbnt201']
    nir = cv2.imread(
        osp.join(root201, 'test', 'NI', os.listdir(osp.join(root201, 'test', 'NI'))[0]),
        cv2.IMREAD_UNCHANGED,
    )
    assert nir.shape == (64, 32)
    with pytest.raises(ValueError, match="unknown layout 'market'"):
        make_synthetic(str(tmp_path), layout='market')
    with pytest.raises(ValueError, match='both the train and the test split need at least one id'):
        make_synthetic(str(tmp_path / 'x'), num_ids=6, train_ids=6)
    with pytest.raises(ValueError, match='samples_per_camera must be >= 2 for rgbnt100'):
        make_synthetic(str(tmp_path / 'y'), layout='rgbnt100', samples_per_camera=1)


def test_one_writer_per_layout():
    assert (
        synthetic.LAYOUTS
        == tuple(synthetic.WRITERS)
        == (
            'rgbnt201',
            'rgbnt100',
            'msvr310',
            'wmveid863',
        )
    )
    # the codes are part of every seed: fixed, one per layout
    codes = {name: writer.code for name, writer in synthetic.WRITERS.items()}
    assert codes == {'rgbnt201': 1, 'rgbnt100': 2, 'msvr310': 3, 'wmveid863': 4}
    assert synthetic.WMVEID863_LAYOUTS == synthetic.WRITERS['wmveid863'].variants
    assert all(not w.variants for n, w in synthetic.WRITERS.items() if n != 'wmveid863')
    with pytest.raises(ValueError, match="no variant 'gallery'"):
        synthetic.WRITERS['wmveid863']('gallery')


def test_writer_variants_are_the_layouts_the_reader_knows():
    # the writer keeps its own copy (it may not import mmdmpt.datasets): the same layouts
    from mmdmpt.testing.synthetic.wmveid863 import VARIANTS

    assert VARIANTS == dict(wmveid863.WMVEID863_LAYOUTS)


def test_testing_imports_only_floor_one_of_mmdmpt():
    # floor 1: mmdmpt.testing may import mmdmpt.utils and mmdmpt.structures (the
    # vocabulary), never the runtime packages it tests
    imported = set()
    for dirpath, _, files in os.walk(TESTING):
        for name in files:
            if not name.endswith('.py'):
                continue
            with open(osp.join(dirpath, name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    imported.add(node.module)
    ours = {m for m in imported if m == 'mmdmpt' or m.startswith('mmdmpt.')}
    floor_one = ('mmdmpt.utils', 'mmdmpt.structures')
    assert ours and all(m.startswith(floor_one) for m in ours), sorted(ours)
