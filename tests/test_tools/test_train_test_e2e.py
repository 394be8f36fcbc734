"""End to end: tools/train.py, tools/test.py and the distributed scripts on a CPU."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdmpt.testing import make_synthetic

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'tests' / 'data' / 'tiny_dmpt_rgbnt201.py'
pytestmark = pytest.mark.slow


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _run(args, env=None, timeout=300):
    # These are CPU runs (gloo): hide any GPU of the machine running the suite.
    full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    full_env.update(env or {})
    return subprocess.run(
        args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('e2e') / 'RGBNT201'
    # 4 train ids (8 samples each), 5 test ids (40 test-split entries).
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


def _data_options(root, test_indices=None):
    opts = [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
    ]
    if test_indices is not None:
        opts.append(f'test_dataloader.dataset.indices={test_indices}')
    return opts


@pytest.fixture(scope='module')
def trained(tree, tmp_path_factory):
    work = tmp_path_factory.mktemp('work')
    result = _run(
        [
            sys.executable,
            'tools/train.py',
            str(CONFIG),
            '--work-dir',
            str(work),
            '--cfg-options',
            *_data_options(tree),
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result.stdout + result.stderr


def test_train_logs_losses_params_and_writes_safe_checkpoints(trained):
    work, log = trained
    assert 'loss_cls:' in log and 'loss_triplet:' in log and 'eta:' in log
    assert 'trainable /' in log  # the parameter count, logged once at build
    assert 'reid/mAP' in log  # validation at the last epoch
    for epoch in (1, 2):
        ckpt = torch.load(work / f'epoch_{epoch}.pth', weights_only=True)
        assert ckpt['meta']['epoch'] == epoch
        assert any(k.startswith('backbone.') for k in ckpt['state_dict'])


def test_resume_continues_from_the_last_checkpoint(trained, tree, tmp_path):
    work, _ = trained
    # Copy epoch 1 into a fresh work dir and resume it to epoch 2.
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    (resumed / 'epoch_1.pth').write_bytes((work / 'epoch_1.pth').read_bytes())
    (resumed / 'last_checkpoint').write_text(str(resumed / 'epoch_1.pth'))
    result = _run(
        [
            sys.executable,
            'tools/train.py',
            str(CONFIG),
            '--work-dir',
            str(resumed),
            '--resume',
            '--cfg-options',
            *_data_options(tree),
        ]
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'resumed epoch: 1' in log.lower() or 'Resumed' in log or 'resumed' in log
    assert 'Epoch(train) [2]' in log and 'Epoch(train) [1]' not in log
    ckpt = torch.load(resumed / 'epoch_2.pth', weights_only=True)
    assert ckpt['meta']['epoch'] == 2


def test_single_and_two_process_test_give_identical_metrics(trained, tree, tmp_path):
    work, _ = trained
    ckpt = str(work / 'epoch_2.pth')
    # 47 test entries: two processes pad one sample, which must not be counted.
    opts = _data_options(tree, test_indices=47)
    single = tmp_path / 'single.json'
    result = _run(
        [
            sys.executable,
            'tools/test.py',
            str(CONFIG),
            ckpt,
            '--work-dir',
            str(tmp_path / 's'),
            '--out',
            str(single),
            '--cfg-options',
            *opts,
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    double = tmp_path / 'double.json'
    result = _run(
        [
            'bash',
            'tools/dist_test.sh',
            str(CONFIG),
            ckpt,
            '2',
            '--work-dir',
            str(tmp_path / 'd'),
            '--out',
            str(double),
            '--cfg-options',
            *opts,
        ],
        env=dict(PORT=_free_port()),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one = json.loads(single.read_text())
    two = json.loads(double.read_text())
    assert one == two
    metrics = next(iter(one.values()))
    assert set(metrics) >= {'reid/mAP', 'reid/mINP', 'reid/Rank-1', 'reid/Rank-5', 'reid/Rank-10'}


def test_two_process_cpu_training(tree, tmp_path):
    result = _run(
        [
            'bash',
            'tools/dist_train.sh',
            str(CONFIG),
            '2',
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            *_data_options(tree),
            'train_cfg.max_epochs=1',
        ],
        env=dict(PORT=_free_port()),
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log or 'distributed' in log.lower()
    ckpt = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert ckpt['meta']['epoch'] == 1


def test_missing_modality_testing_prints_a_table(trained, tree, tmp_path):
    work, _ = trained
    out = tmp_path / 'missing.json'
    result = _run(
        [
            sys.executable,
            'tools/test.py',
            str(CONFIG),
            str(work / 'epoch_2.pth'),
            '--missing',
            'all',
            '--out',
            str(out),
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            *_data_options(tree),
        ]
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'Missing-modality evaluation' in log
    table = json.loads(out.read_text())
    assert list(table)[0] == 'rgb+nir+tir' and len(table) == 7
    # Dropping modalities changes what the model sees, hence the metrics: the
    # seven settings are not one evaluation printed seven times.
    maps = {name: round(m['reid/mAP'], 6) for name, m in table.items()}
    assert len(set(maps.values())) >= 4, maps
    assert all(maps[name] != maps['rgb+nir+tir'] for name in ('rgb', 'nir', 'tir')), maps


def test_amp_on_cpu_is_refused_clearly(tree, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    result = _run(
        [
            sys.executable,
            'tools/train.py',
            str(CONFIG),
            '--amp',
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            *_data_options(tree),
        ]
    )
    assert result.returncode != 0
    assert '--amp' in result.stderr and 'needs a CUDA GPU' in result.stderr


def test_missing_data_and_weights_are_named_first(tmp_path):
    missing_root = tmp_path / 'nowhere'
    weights = tmp_path / 'ViT-B-16.pt'
    result = _run(
        [
            sys.executable,
            'tools/train.py',
            str(CONFIG),
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            *_data_options(missing_root),
            f'model.backbone.pretrained={weights}',
        ]
    )
    assert result.returncode != 0
    head = result.stderr.splitlines()[:4]
    text = '\n'.join(head)
    assert str(missing_root) in text and 'official layout' in text
    assert str(weights) in text and 'ViT-B-16.pt' in text


@pytest.mark.parametrize(
    'option, message',
    [
        ('model.head.num_classes=5', 'model.head.num_classes=5 but the training set'),
        ('train_dataloader.batch_size=12', 'train_dataloader.sampler.batch_size=8'),
    ],
)
def test_model_and_data_mismatches_stop_at_start(tree, tmp_path, option, message):
    result = _run(
        [
            sys.executable,
            'tools/train.py',
            str(CONFIG),
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            *_data_options(tree),
            option,
        ]
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert 'Epoch(train)' not in result.stdout + result.stderr
