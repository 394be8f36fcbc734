"""extract_features.py, visualize_ranks.py and plot_curves.py end to end."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmdmpt.evaluation.functional import compute_distance
from mmdmpt.testing import load_script
from mmdmpt.utils.errors import ConfigError, DataNotFoundError
from mmdmpt.visualization import MATCH_COLOR, MISMATCH_COLOR, ScalarKeyError, rank_list_layout

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / 'tools' / 'analysis_tools'


def _load(name, path):
    return load_script(path, name)


common = _load('mmdmpt_tests_apis_common', ROOT / 'tests' / 'test_apis' / 'common.py')


def _tool(name):
    return _load(f'mmdmpt_tool_{name}', TOOLS / f'{name}.py')


@pytest.fixture(scope='module', autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny tree, its config file and a full checkpoint."""
    base = tmp_path_factory.mktemp('tools')
    tree = common.make_tree(str(base / 'RGBNT201'))
    cfg = common.tiny_config(tree, log_level='WARNING')
    cfg_file = str(base / 'tiny.py')
    cfg.dump(cfg_file)
    ckpt = common.save_checkpoint(common.build_model(cfg, seed=5), str(base / 'ckpt.pth'))
    return dict(base=base, cfg_file=cfg_file, ckpt=ckpt)


@pytest.fixture(scope='module')
def feature_file(setup):
    out = str(setup['base'] / 'feats.pt')
    assert _tool('extract_features').main([setup['cfg_file'], setup['ckpt'], '--out', out]) == 0
    return out


def test_extract_features_pt(feature_file, capsys):
    data = torch.load(feature_file, weights_only=True)  # tensors and primitives only
    for key in ('feats', 'pids', 'camids', 'sceneids', 'is_query', 'img_paths', 'sample_idx'):
        assert key in data, key
    assert data['feats'].shape == (48, 3 * 64) and data['feats'].dtype == torch.float32
    torch.testing.assert_close(data['feats'].norm(dim=1), torch.ones(48))
    assert int(data['is_query'].sum()) == 24 and (data['sceneids'] == -1).all()
    assert len(data['img_paths']) == 48 and len(data['img_paths'][0]) == 3
    assert data['modalities'] == ['rgb', 'nir', 'tir'] and data['missing'] == []


def test_extract_features_npz_missing(setup, capsys):
    out = str(setup['base'] / 'feats_no_tir.npz')
    argv = [setup['cfg_file'], setup['ckpt'], '--out', out, '--missing', 'tir', '--no-normalize']
    assert _tool('extract_features').main(argv) == 0
    assert 'missing tir' in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as data:
        assert data['feats'].shape == (48, 192)
        assert not data['modality_mask'][:, 2].any() and data['modality_mask'][:, :2].all()
        assert np.all(data['feats'][:, 128:] == 0)
        assert data['img_paths'].shape == (48, 3) and bool(data['normalized']) is False
        assert list(data['missing']) == ['tir']
    with pytest.raises(ConfigError, match=r'--out must end in \.pt or \.npz, got x\.txt'):
        _tool('extract_features').main([setup['cfg_file'], setup['ckpt'], '--out', 'x.txt'])


def _expected_matches(feats, q_row, topk):
    """Independent ranking: float64 cosine, stable sort, same-id-same-camera removed."""
    is_query = feats['is_query']
    q_idx = is_query.nonzero().flatten()[q_row]
    g_idx = (~is_query).nonzero().flatten()
    dist = compute_distance(feats['feats'][q_idx][None], feats['feats'][g_idx]).numpy()[0]
    order = np.argsort(dist, kind='stable')
    pid, cam = int(feats['pids'][q_idx]), int(feats['camids'][q_idx])
    g_pids, g_cams = feats['pids'][g_idx].numpy(), feats['camids'][g_idx].numpy()
    order = [j for j in order if not (g_pids[j] == pid and g_cams[j] == cam)]
    return [bool(g_pids[j] == pid) for j in order[:topk]], pid


def _check_picture(path, feats, q_row, topk):
    matches, pid = _expected_matches(feats, q_row, topk)
    assert Path(path).name == f'query{q_row:04d}_id{pid}.png'
    img = cv2.imread(str(path))[..., ::-1]  # BGR file -> RGB
    layout = rank_list_layout(3, len(matches), (128, 64), title=True, legend_lines=2)
    assert img.shape[0] == layout.height and img.shape[1] >= layout.width
    for box, match in zip(layout.gallery_boxes, matches):
        for y, x in ((box[1] + 1, box[0] + 1), (box[3] - 2, box[2] - 2)):
            assert tuple(img[y, x]) == (MATCH_COLOR if match else MISMATCH_COLOR)
    return matches


def test_visualize_ranks_from_checkpoint_and_from_features(setup, feature_file, capsys):
    from mmdmpt.apis import load_features

    feats = load_features(feature_file)
    tool = _tool('visualize_ranks')
    out1 = setup['base'] / 'ranks_ckpt'
    argv = [setup['cfg_file'], setup['ckpt'], '--out-dir', str(out1)]
    assert tool.main(argv + ['--queries', '1', '12', '--topk', '6']) == 0
    out2 = setup['base'] / 'ranks_feats'
    argv = [setup['cfg_file'], '--features', feature_file, '--out-dir', str(out2)]
    # --topk beyond the 22 samples left after the removal rule: every true match shows.
    assert tool.main(argv + ['--num', '3', '--topk', '30']) == 0
    files1, files2 = sorted(out1.glob('*.png')), sorted(out2.glob('*.png'))
    assert [f.name[:9] for f in files1] == ['query0001', 'query0012']
    assert [f.name[:9] for f in files2] == ['query0000', 'query0012', 'query0023']
    for path, row in zip(files1, (1, 12)):
        _check_picture(path, feats, row, 6)
    for path, row in zip(files2, (0, 12, 23)):
        matches = _check_picture(path, feats, row, 30)
        assert len(matches) == 22 and sum(matches) == 2  # 2 true matches, 20 others
    # Features from the checkpoint or from the file: the same ranking.
    a, b = cv2.imread(str(files1[1])), cv2.imread(str(files2[1]))
    layout = rank_list_layout(3, 6, (128, 64), title=True, legend_lines=2)
    rows = slice(layout.query_box[1] - 30, layout.query_box[3])  # labels and pictures
    cols = slice(0, layout.gallery_boxes[5][2])
    np.testing.assert_array_equal(a[rows, cols], b[rows, cols])


def test_visualize_ranks_argument_errors(setup):
    tool = _tool('visualize_ranks')
    with pytest.raises(SystemExit):
        tool.main([setup['cfg_file'], '--out-dir', 'x'])
    with pytest.raises(ConfigError, match=r'query indices \[99\] out of range'):
        tool.main(
            [setup['cfg_file'], setup['ckpt'], '--out-dir', str(setup['base'] / 'e'),
             '--queries', '99']
        )  # fmt: skip


def test_plot_curves_tool(tmp_path, capsys):
    records = [
        dict(lr=1e-3, loss=2.0, loss_cls=1.5, loss_triplet=0.5, epoch=1, iter=5, step=5),
        dict(lr=1e-3, loss=1.0, loss_cls=0.8, loss_triplet=0.2, epoch=2, iter=10, step=10),
        {'reid/mAP': 30.0, 'reid/Rank-1': 40.0, 'step': 2},
    ]
    log = tmp_path / 'scalars.json'
    log.write_text(''.join(json.dumps(r) + '\n' for r in records))
    out = tmp_path / 'curves.png'
    tool = _tool('plot_curves')
    assert tool.main([str(log), '--out', str(out)]) == 0
    assert 'loss, loss_cls, loss_triplet, reid/mAP, reid/Rank-1' in capsys.readouterr().out
    img = cv2.imread(str(out))
    assert img is not None and min(img.shape[:2]) > 100
    with pytest.raises(DataNotFoundError, match='no scalar log found'):
        tool.main([str(tmp_path / 'nowhere'), '--out', str(out)])
    with pytest.raises(ScalarKeyError, match=r"keys \['reid/mINP'\] are not in the scalar log"):
        tool.main([str(log), '--out', str(out), '--keys', 'reid/mINP'])
