import os.path as osp
import re
import shutil

import pytest

from mmdmpt.datasets import MSVR310

NAME = re.compile(r'^(\d{4})_s(\d{3})_v(\d)_(\d{3})\.jpg$')


def test_splits_scenes_and_views(trees):
    root, summary = trees['msvr310']
    train = MSVR310(root, split='train')
    assert len(train) == 6 * 3 * 2 * 2  # ids x scenes x views x samples
    assert train.metainfo['has_scenes'] is True
    assert sorted({train.get_data_info(i)['gt_label'] for i in range(len(train))}) == list(range(6))
    for i in range(len(train)):
        info = train.get_data_info(i)
        vid, scene, view, _ = NAME.match(osp.basename(info['img_paths'][0])).groups()
        assert info['sceneid'] == int(scene) and info['camid'] == int(view)  # already 0-based
        assert [p.split(osp.sep)[-2] for p in info['img_paths']] == ['vis', 'ni', 'th']
        assert info['img_paths'][0].split(osp.sep)[-3] == vid
    test = MSVR310(root, split='test')
    infos = [test.get_data_info(i) for i in range(len(test))]
    query = [i for i in infos if i['is_query']]
    gallery = [i for i in infos if not i['is_query']]
    assert infos[: len(query)] == query  # queries first
    assert len(query) == 6 * 3  # one per (test id, scene)
    assert len(gallery) == 6 * 3 * 2 * 2
    # query3 samples are also in the gallery (same names), the scene rule removes them
    gallery_names = {osp.basename(i['img_paths'][0]) for i in gallery}
    assert {osp.basename(i['img_paths'][0]) for i in query} <= gallery_names
    assert {i['gt_label'] for i in infos} == set(summary['test_ids'])
    assert all('sceneid' in i for i in infos)


def test_summary_has_scenes(trees, monkeypatch):
    import mmdmpt.datasets.base as base

    logged = []
    monkeypatch.setattr(base, 'print_log', lambda msg, **kw: logged.append(msg))
    root, _ = trees['msvr310']
    MSVR310(root, split='test')
    assert len(logged) == 1
    table = logged[0]
    assert "MSVR310 split 'test'" in table
    assert '# ids' in table and '# samples' in table and '# cameras' in table
    assert '# scenes' in table and 'query' in table and 'gallery' in table


def _copy(trees, tmp_path):
    root = tmp_path / 'MSVR310'
    shutil.copytree(trees['msvr310'][0], root)
    return root


def test_id_mismatch_and_bad_folder(trees, tmp_path):
    root = _copy(trees, tmp_path)
    vid_dir = sorted((root / 'query3').iterdir())[0]
    name = sorted((vid_dir / 'vis').iterdir())[0].name
    wrong = '9999' + name[4:]
    for f in ('vis', 'ni', 'th'):
        (vid_dir / f / name).rename(vid_dir / f / wrong)
    with pytest.raises(
        ValueError, match=rf"cannot parse image name '{wrong}'.*differs from its folder"
    ):
        MSVR310(str(root), split='query')
    shutil.rmtree(vid_dir)
    (root / 'query3' / 'car12').mkdir()
    with pytest.raises(ValueError, match="cannot parse id folder 'car12'"):
        MSVR310(str(root), split='query')


def test_missing_modality_folder_of_an_id(trees, tmp_path):
    root = _copy(trees, tmp_path)
    vid_dir = sorted((root / 'bounding_box_test').iterdir())[1]
    shutil.rmtree(vid_dir / 'th')
    with pytest.raises(
        FileNotFoundError, match=rf"id {vid_dir.name}: folder of modality 'tir' not found"
    ):
        MSVR310(str(root), split='gallery')
    assert len(MSVR310(str(root), split='gallery', modalities=('rgb', 'nir'))) == 6 * 12


def test_bad_scene_name(trees, tmp_path):
    root = _copy(trees, tmp_path)
    vid_dir = sorted((root / 'bounding_box_train').iterdir())[0]
    for f in ('vis', 'ni', 'th'):
        shutil.copy(sorted((vid_dir / f).iterdir())[0], vid_dir / f / f'{vid_dir.name}_v1_000.jpg')
    with pytest.raises(
        ValueError, match=r"_v1_000.jpg'.*expected the pattern '\{vid:04d\}_s\{scene:03d\}"
    ):
        MSVR310(str(root))
