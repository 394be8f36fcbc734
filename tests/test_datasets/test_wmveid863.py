import os
import os.path as osp
import re
import shutil

import numpy as np
import pytest

import mmdmpt.datasets.base as base
from mmdmpt.datasets import WMVeID863


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


def _hand_tree(tmp_path, writer):
    """One id whose vis/ni/th files hold the index of their name as value."""
    root = tmp_path / 'WMVeID863'
    names = ['0005_v0_n0_000.jpg', '0005_v1_n1_001.jpg', '0005_v2_n0_002.jpg']
    for split in ('train', 'query', 'test'):
        # written in different orders per modality
        for f, order in (('vis', (0, 1, 2)), ('ni', (2, 0, 1)), ('th', (1, 2, 0))):
            for k in order:
                writer(root / split / '0005' / f / names[k], np.full((16, 16), 40 * (k + 1)))
    return root, names


def test_pairing_by_name_not_listing_order(tmp_path, writer, monkeypatch):
    root, names = _hand_tree(tmp_path, writer)
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
    for i in range(3):
        out = ds[i]
        assert len({osp.basename(p) for p in out['img_paths']}) == 1
        k = names.index(osp.basename(out['img_paths'][0]))
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
