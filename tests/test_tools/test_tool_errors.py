"""User errors of the analysis tools and converters: one block, exit status 2, no traceback.

Each tool runs as a subprocess (as a user runs it) on one bad input; the test checks the
exit status, that the message names the bad key or path and says what was expected, and
that stderr holds no traceback. ``--debug`` brings the traceback back. The last test
trains on a tree with one undecodable image, met inside a dataloader worker: the error
reaches the user once, without the worker's traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdmpt.testing import make_synthetic

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'tests' / 'data' / 'tiny_dmpt_rgbnt201.py'
pytestmark = pytest.mark.slow


def _run(script, *args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env.pop('MMDMPT_DEBUG', None)
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools' / script), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _user_error(result, tool, kind, *parts):
    """Exit status 2, ``<tool>: <kind>`` then every part, and no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f'{tool}: {kind}\n' in result.stderr, result.stderr
    text = ' '.join(result.stderr.split())
    for part in parts:
        assert part in text, f'{part!r} not in: {result.stderr}'
    assert 'Traceback' not in output, output[-3000:]
    assert 'run with --debug to see the traceback' in result.stderr


def _data_options(root):
    return [f'{k}_dataloader.dataset.data_root={root}' for k in ('train', 'val', 'test')]


def _tiny_tree(root):
    make_synthetic(
        str(root),
        layout='rgbnt201',
        num_ids=9,
        train_ids=4,
        samples_per_camera=2,
        height=64,
        width=32,
        seed=3,
    )
    return root


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    return tmp_path_factory.mktemp('tool_errors')


@pytest.fixture(scope='module')
def text_file(base):
    """A text file where a binary file (checkpoint, features) is expected."""
    path = base / 'notes.pt'
    path.write_text('not a tensor file\n')
    return path


def test_count_params_bad_model_setting(base):
    result = _run(
        'analysis_tools/count_params.py',
        CONFIG,
        '--cfg-options',
        'model.backbone.feature=bogus',
    )
    _user_error(
        result,
        'count_params.py',
        'config error',
        'feature (model.backbone.feature) must be one of',
        "got 'bogus'",
    )


def test_extract_features_checkpoint_is_not_a_checkpoint(base, text_file):
    out = base / 'feats.pt'
    result = _run('analysis_tools/extract_features.py', CONFIG, text_file, '--out', out)
    _user_error(
        result,
        'extract_features.py',
        'checkpoint error',
        f'`{text_file}` is not a PyTorch checkpoint',
        'Expected a file written by torch.save',
    )
    assert not out.exists()


def test_visualize_ranks_feature_file_is_not_a_feature_file(base, text_file):
    tree = _tiny_tree(base / 'RGBNT201')
    out_dir = base / 'ranks'
    result = _run(
        'analysis_tools/visualize_ranks.py',
        CONFIG,
        '--features',
        text_file,
        '--out-dir',
        out_dir,
        '--data-root',
        tree,
    )
    _user_error(
        result,
        'visualize_ranks.py',
        'data error',
        f'cannot read the feature file {text_file}',
        'expected a file written by tools/analysis_tools/extract_features.py',
    )
    assert not out_dir.exists()


def _bad_scalar_log(base):
    log = base / 'scalars.json'
    log.write_text('{"lr": 0.001, "loss": 1.0, "step": 1}\n{"loss": oops}\n')
    return log


def test_plot_curves_unreadable_scalar_log(base):
    log = _bad_scalar_log(base)
    out = base / 'curves.png'
    result = _run('analysis_tools/plot_curves.py', log, '--out', out)
    _user_error(
        result,
        'plot_curves.py',
        'data error',
        f'{log}:2: not a JSON line',
        'one JSON object per line',
    )
    assert not out.exists()


def test_debug_shows_the_traceback(base):
    log = _bad_scalar_log(base)
    result = _run('analysis_tools/plot_curves.py', log, '--out', base / 'c.png', '--debug')
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback (most recent call last)' in result.stderr
    assert f'mmdmpt.utils.errors.DataError: {log}:2: not a JSON line' in result.stderr
    assert 'run with --debug' not in result.stderr


def test_openai_to_safetensors_missing_source(base):
    src, dst = base / 'nowhere' / 'ViT-B-16.pt', base / 'ViT-B-16.safetensors'
    result = _run('model_converters/openai_to_safetensors.py', src, dst)
    _user_error(
        result,
        'openai_to_safetensors.py',
        'checkpoint error',
        f'CLIP weight file not found: {src}',
        'Weights are never downloaded',
    )
    assert not dst.exists()


def test_reid_to_open_clip_checkpoint_without_the_visual_tower(base):
    ckpt = base / 'trainable_only.pth'
    torch.save({'state_dict': {'head.bn.weight': torch.ones(4)}}, ckpt)
    out = base / 'visual.safetensors'
    result = _run('model_converters/reid_to_open_clip.py', CONFIG, ckpt, out)
    _user_error(
        result,
        'reid_to_open_clip.py',
        'checkpoint error',
        f'{ckpt} holds no "backbone.visual.*" weights',
        'it must be a full checkpoint',
    )
    assert not out.exists()


def test_train_bad_image_in_a_dataloader_worker_is_reported_once(tmp_path):
    tree = _tiny_tree(tmp_path / 'RGBNT201')
    rgb = tree / 'train_171' / 'RGB'
    bad = rgb / sorted(os.listdir(rgb))[0]
    bad.write_text('this is not an image\n')
    result = _run(
        'train.py',
        CONFIG,
        '--work-dir',
        tmp_path / 'work',
        '--cfg-options',
        *_data_options(tree),
        'train_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=False',
    )
    _user_error(result, 'train.py', 'data error', f'cannot decode image {bad}', 'not an image')
    output = result.stdout + result.stderr
    assert output.count(str(bad)) == 1, output[-3000:]
    assert 'Original Traceback' not in output and 'DataLoader worker' not in output
