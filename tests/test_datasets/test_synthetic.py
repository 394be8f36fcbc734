import hashlib
import importlib.util
import os
import os.path as osp

import numpy as np
import pytest

from mmdmpt.datasets import synthetic
from mmdmpt.datasets.synthetic import make_synthetic

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = osp.join(dirpath, f)
            with open(path, 'rb') as fh:
                out[osp.relpath(path, root)] = hashlib.md5(fh.read()).hexdigest()
    return out


def _cli():
    path = osp.join(ROOT, 'tools', 'dataset_converters', 'make_synthetic.py')
    spec = importlib.util.spec_from_file_location('make_synthetic_cli', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deterministic_bytes(tmp_path):
    args = dict(layout='msvr310', num_ids=6, train_ids=3, samples_per_camera=1, height=32, width=64)
    make_synthetic(str(tmp_path / 'a'), seed=7, **args)
    make_synthetic(str(tmp_path / 'b'), seed=7, **args)
    make_synthetic(str(tmp_path / 'c'), seed=8, **args)
    a, b, c = (_digest(tmp_path / k) for k in 'abc')
    assert a == b and len(a) > 10
    assert a != c


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
    s1 = cli.main(common + ['--out', str(tmp_path / 'a')])
    assert 'rgbnt201: 3 train ids, 3 test ids' in capsys.readouterr().out
    s2 = cli.main(common + ['--out', str(tmp_path / 'b'), '--id-offset', '1001'])
    assert set(s1['train_ids']) | set(s1['test_ids']) == set(range(1, 7))
    assert set(s2['train_ids']) | set(s2['test_ids']) == set(range(1001, 1007))
    assert not set(s1['train_ids']) & set(s1['test_ids'])
    assert sorted(os.listdir(tmp_path / 'a')) == ['synthetic_meta.json', 'test', 'train_171']
    assert sorted(os.listdir(tmp_path / 'a' / 'test')) == ['NI', 'RGB', 'TI']
    # a disjoint identity set also looks different
    ids1 = synthetic._make_identities(6, 3, 'person', 0, 1)
    ids2 = synthetic._make_identities(6, 3, 'person', 0, 1001)
    assert [i['colours'] for i in ids1] != [i['colours'] for i in ids2]
    with pytest.raises(FileExistsError, match='pass overwrite=True'):
        cli.main(common + ['--out', str(tmp_path / 'a')])
    cli.main(common + ['--out', str(tmp_path / 'a'), '--overwrite'])
    assert (
        cli.parse_args(['--layout', 'msvr310', '--out', 'x', '--train-ids', '12']).train_ids == 12
    )


def test_families_differ_in_one_modality_only():
    for kind in ('person', 'vehicle'):
        idents = synthetic._make_identities(30, 3, kind, 0, 1)
        types = set()
        for f in range(10):
            members = [i for i in idents if i['family'] == f]
            luts = [synthetic._luts(i, kind) for i in members]
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
