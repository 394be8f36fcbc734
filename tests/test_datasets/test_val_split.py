import pytest

from mmdmpt.datasets import MSVR310, RGBNT201


def _ids(ds):
    return [ds.get_data_info(i)['gt_label'] for i in range(len(ds))]


def test_val_holdout(trees):
    root, summary = trees['rgbnt201']
    train_ids = sorted(summary['train_ids'])
    train = RGBNT201(root, split='train', val_fraction=0.34, val_seed=1)
    val = RGBNT201(root, split='val', val_fraction=0.34, val_seed=1)
    held = set(_ids(val))
    assert len(held) == 2  # round(0.34 * 6)
    kept = {int(c) for c in train.metainfo['classes']}
    assert kept.isdisjoint(held) and kept | held == set(train_ids)
    assert sorted(set(_ids(train))) == list(range(4)) and train.metainfo['num_ids'] == 4
    assert val.metainfo['num_ids'] == 2 and held <= set(train_ids)  # raw ids kept
    infos = [val.get_data_info(i) for i in range(len(val))]
    query = [i for i in infos if i['is_query']]
    assert infos[: len(query)] == query
    assert len(query) == 2 * 4  # one per (id, camera)
    assert len({(i['gt_label'], i['camid']) for i in query}) == len(query)
    assert len(infos) == 2 * 4 * 2
    assert val.test_mode and not train.test_mode
    # deterministic
    again = RGBNT201(root, split='val', val_fraction=0.34, val_seed=1)
    assert [i['img_paths'] for i in infos] == [
        again.get_data_info(i)['img_paths'] for i in range(len(again))
    ]
    # the seed matters
    choices = {
        frozenset(_ids(RGBNT201(root, split='val', val_fraction=0.34, val_seed=s)))
        for s in range(6)
    }
    assert len(choices) > 1
    # test split untouched
    assert len(RGBNT201(root, split='test', val_fraction=0.34)) == len(RGBNT201(root, split='test'))


def test_val_with_scenes(trees):
    root, _ = trees['msvr310']
    val = MSVR310(root, split='val', val_fraction=0.2)
    infos = [val.get_data_info(i) for i in range(len(val))]
    assert len({i['gt_label'] for i in infos}) == 1
    assert all('sceneid' in i for i in infos)


def test_val_leaves_no_training_id(trees):
    root, _ = trees['rgbnt201']
    with pytest.raises(ValueError, match='holds out 6 of 6 training ids'):
        RGBNT201(root, split='val', val_fraction=0.95)
