import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmdmpt.apis import GallerySearcher, extract_dataset_features, split_query_gallery
from mmdmpt.engine.hooks import RankListHook
from mmdmpt.structures import ReIDFeatures
from mmdmpt.testing import load_script
from mmdmpt.visualization import MATCH_COLOR, MISMATCH_COLOR, rank_list_layout

ROOT = Path(__file__).resolve().parents[2]


def _test_tool():
    return load_script(ROOT / 'tools' / 'test.py', 'mmdmpt_tools_test')


def test_tools_test_show_dir_draws_the_first_setting(common, tree, tmp_path, monkeypatch):
    cfg = common.tiny_config(tree, log_level='WARNING')
    ckpt = common.save_checkpoint(common.build_model(cfg, seed=4), str(tmp_path / 'ckpt.pth'))
    cfg_file = tmp_path / 'tiny.py'
    cfg.dump(str(cfg_file))
    show = tmp_path / 'show'
    argv = [
        'test.py', str(cfg_file), ckpt, '--work-dir', str(tmp_path / 'work'),
        '--show-dir', str(show), '--show-num', '3', '--missing', 'all',
        '--cfg-options', 'default_hooks.rank_list.topk=4',
    ]  # fmt: skip
    monkeypatch.setattr(sys, 'argv', argv)
    tool = _test_tool()
    args = tool.parse_args()
    run_cfg = tool.merge_args(Config.fromfile(str(cfg_file)), args)
    hook = run_cfg.default_hooks.rank_list
    assert hook.enable and hook.out_dir == str(show) and hook.num_queries == 3
    runner = Runner.from_cfg(run_cfg)
    metrics = runner.test()
    assert 'reid/mAP' in metrics and not any(k.startswith('show') for k in metrics)

    # One picture per query, evenly spread over the 24 queries; only the first
    # (full-modality) setting of '--missing all' is drawn.
    files = sorted(p.name for p in show.glob('*.png'))
    assert len(files) == 3
    assert [f.split('_')[0] for f in files] == ['query0000', 'query0012', 'query0023']

    # The picture shows the metric's ranking: same model, same features.
    feats = extract_dataset_features(runner.model, cfg.test_dataloader, progress=False)
    query, gallery = split_query_gallery(feats)
    searcher = GallerySearcher(
        gallery['feats'], gallery_pids=gallery['pids'], gallery_camids=gallery['camids']
    )
    res = searcher.search(
        query['feats'][[12]], 4, query_pids=query['pids'][[12]], query_camids=query['camids'][[12]]
    )
    img = cv2.imread(str(show / files[1]))[..., ::-1]
    layout = rank_list_layout(3, 4, (128, 64), title=True, legend_lines=2)
    assert img.shape[0] == layout.height
    for box, j in zip(layout.gallery_boxes, res.indices[0].tolist()):
        match = int(gallery['pids'][j]) == int(query['pids'][12])
        assert tuple(img[box[1] + 1, box[0] + 1]) == (MATCH_COLOR if match else MISMATCH_COLOR)


def test_show_options_are_checked():
    with pytest.raises(ValueError, match='num_queries must be a positive int'):
        RankListHook(enable=True, num_queries=0)
    assert RankListHook().enable is False


def test_collected_records_drop_distributed_padding():
    """Samples repeated by a distributed sampler's padding are drawn once, in index order."""

    def rec(i, q):
        return dict(
            feature=torch.full((4,), float(i)),
            pid=i % 2,
            camid=0,
            sceneid=-1,
            is_query=q,
            sample_idx=i,
            modality_mask=torch.tensor([True, False]),
            img_paths=[f'{i}a.jpg', f'{i}b.jpg'],
        )

    # Rank 0 got 0, 2, 4; rank 1 got 1, 3 and 0 again (padding).
    records = [
        rec(0, True),
        rec(2, False),
        rec(4, False),
        rec(1, True),
        rec(3, False),
        rec(0, True),
    ]
    feats = ReIDFeatures.from_records(records, ('rgb', 'tir'), dataset_name='X')
    assert feats['sample_idx'].tolist() == [0, 1, 2, 3, 4]
    assert feats['feats'][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert feats['is_query'].tolist() == [True, True, False, False, False]
    assert feats['img_paths'][3] == ['3a.jpg', '3b.jpg'] and not feats['has_scenes']
    assert feats['modality_mask'].shape == (5, 2) and feats['dataset_name'] == 'X'


def _hooks(show_dir):
    return dict(
        rank_list=dict(type='RankListHook', enable=True, out_dir=show_dir, num_queries=3, topk=5)
    )


DIST_SCRIPT = """
import sys
import torch
import torch.distributed as dist
import torch
from mmengine.config import Config
from mmengine.runner import Runner

torch.set_num_threads(1)
dist.init_process_group('gloo')
cfg = Config.fromfile(sys.argv[1])
cfg.work_dir = sys.argv[2]
cfg.load_from = sys.argv[3]
cfg.default_hooks = dict(
    rank_list=dict(type='RankListHook', enable=True, out_dir=sys.argv[4], num_queries=3, topk=5)
)
cfg.visualizer = dict(type='ReIDVisualizer', name='dist_vis')
Runner.from_cfg(cfg).test()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_show_dir_in_a_distributed_run_matches_one_process(common, tree, tmp_path):
    """2 gloo processes: rank 0 gathers every rank's samples and draws the same pictures."""
    import os
    import socket
    import subprocess

    cfg = common.tiny_config(tree, log_level='WARNING', test_cfg=dict())
    cfg_file = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_file)
    ckpt = common.save_checkpoint(common.build_model(cfg, seed=6), str(tmp_path / 'ckpt.pth'))
    script = tmp_path / 'run.py'
    script.write_text(DIST_SCRIPT)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
        '--master_addr', '127.0.0.1', '--master_port', str(port), str(script), cfg_file,
        str(tmp_path / 'work2'), ckpt, str(tmp_path / 'show2'),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one = dict(cfg, work_dir=str(tmp_path / 'work1'), load_from=ckpt)
    one['default_hooks'] = _hooks(str(tmp_path / 'show1'))
    one['visualizer'] = dict(type='ReIDVisualizer', name='one_vis')
    Runner.from_cfg(Config(one)).test()
    names = sorted(p.name for p in (tmp_path / 'show1').glob('*.png'))
    assert len(names) == 3
    assert names == sorted(p.name for p in (tmp_path / 'show2').glob('*.png'))
    for name in names:
        assert (tmp_path / 'show1' / name).read_bytes() == (tmp_path / 'show2' / name).read_bytes()


def test_rank_lists_follow_the_datasets_removal_rule(tmp_path):
    """Data without cameras (rule 'none'): a same-id gallery sample is shown, not hidden."""
    from mmdmpt.engine.hooks import write_rank_lists

    paths = []
    for i in range(3):
        path = tmp_path / f'{i}.png'
        cv2.imwrite(str(path), np.full((16, 8, 3), 40 * i, np.uint8))
        paths.append([str(path)])
    rec = dict(
        feature=None, camid=-1, sceneid=-1, modality_mask=torch.tensor([True]), img_paths=None
    )
    records = [
        dict(rec, feature=torch.tensor([1.0, 0.0]), pid=5, is_query=True, sample_idx=0),
        dict(rec, feature=torch.tensor([1.0, 0.1]), pid=5, is_query=False, sample_idx=1),
        dict(rec, feature=torch.tensor([0.0, 1.0]), pid=6, is_query=False, sample_idx=2),
    ]
    for r, p in zip(records, paths):
        r['img_paths'] = p
    shown = {}
    for rule in ('none', 'camera'):
        feats = ReIDFeatures.from_records(records, ('rgb',), removal_rule=rule)
        files = write_rank_lists(feats, str(tmp_path / rule), topk=2)
        img = cv2.imread(files[0])[..., ::-1]
        layout = rank_list_layout(1, 2, (128, 64), title=True, legend_lines=1)
        box = layout.gallery_boxes[0]
        shown[rule] = tuple(img[box[1] + 1, box[0] + 1])
    assert shown['none'] == MATCH_COLOR  # the same id (camid -1 both) is ranked first
    assert shown['camera'] == MISMATCH_COLOR  # same id and "same camera": hidden
