"""A newcomer's mistakes with tools/train.py and tools/test.py: one message, exit 2.

Each test runs the real tool as a subprocess with one bad input and checks the
exit status (2), the message (what is wrong, the key or path, what was
expected) and that stderr holds no traceback; the good paths check what the
tools derive and where they write.
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
VITB_CONFIG = ROOT / 'configs' / 'dmpt' / 'dmpt_vitb_rgbnt201.py'
pytestmark = pytest.mark.slow
NOISE = ('MultiScaleDeformableAttention', '"FileClient" will be deprecated', 'HardDiskBackend')


def _run(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _user_error(result, *parts):
    """Exit status 2, every part in stderr (whitespace-insensitive), no traceback."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    text = ' '.join(result.stderr.split())
    for part in parts:
        assert part in text, f'{part!r} not in: {text}'
    return text


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('errors') / 'RGBNT201'
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
def trained(tree, tmp_path_factory):
    """One epoch of the tiny config, with --data-root and num_classes='auto'."""
    work = tmp_path_factory.mktemp('trained')
    result = _run(
        'tools/train.py',
        CONFIG,
        '--work-dir',
        work,
        '--data-root',
        tree,
        '--cfg-options',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        'model.head.num_classes=auto',
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / 'epoch_1.pth', result.stdout + result.stderr


def test_training_derives_num_classes_and_stays_quiet(trained):
    ckpt, log = trained
    assert "model.head.num_classes='auto' -> 6 (from the training set)" in log
    assert torch.load(ckpt, weights_only=True)['meta']['num_classes'] == 6
    for noise in NOISE:
        assert noise not in log


@pytest.mark.parametrize('kind', ['text', 'truncated', 'empty'])
def test_a_file_that_is_not_a_checkpoint_is_named_at_once(trained, tmp_path, kind):
    ckpt, _ = trained
    bad = tmp_path / 'model.pth'
    if kind == 'text':
        bad.write_text('these are not weights\n')
    elif kind == 'truncated':
        bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    else:
        bad.write_bytes(b'')
    work = tmp_path / 'work'
    result = _run('tools/test.py', CONFIG, bad, '--work-dir', work)
    _user_error(result, f'`{bad}` is not a PyTorch checkpoint')
    assert not work.exists()  # refused before the config was read or anything built


def test_a_checkpoint_of_other_prompt_settings_is_refused_naming_keys_and_knob(
    trained, tree, tmp_path
):
    ckpt, _ = trained
    result = _run(
        'tools/test.py',
        CONFIG,
        ckpt,
        '--work-dir',
        tmp_path,
        '--data-root',
        tree,
        '--cfg-options',
        'model.backbone.num_modality_prompts=2',
    )
    _user_error(
        result,
        'does not fit the model',
        'backbone.modality_prompts.offsets: checkpoint (3, 4, 64), model (3, 2, 64)',
        'model.backbone.num_modality_prompts: checkpoint 4, config 2',
    )
    assert 'reid/mAP' not in result.stdout + result.stderr


def test_a_checkpoint_without_a_trained_tensor_is_refused(trained, tree, tmp_path):
    ckpt, _ = trained
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint['state_dict']['backbone.bind_prompts.prompts']
    damaged = tmp_path / 'no_bind.pth'
    torch.save(checkpoint, damaged)
    result = _run('tools/test.py', CONFIG, damaged, '--work-dir', tmp_path, '--data-root', tree)
    _user_error(result, '1 trained tensor(s) are missing (backbone.bind_prompts.prompts)')
    assert 'reid/mAP' not in result.stdout + result.stderr


def test_a_tiny_checkpoint_on_the_vitb_config_is_refused(trained, tree, tmp_path):
    ckpt, _ = trained
    result = _run(
        'tools/test.py',
        VITB_CONFIG,
        ckpt,
        '--work-dir',
        tmp_path,
        '--data-root',
        tree,
        '--cfg-options',
        'model.backbone.pretrained=None',
    )
    text = _user_error(result, 'does not fit the model', 'differ in shape', 'model (768,)')
    assert 'model.backbone.clip_model' in text  # the knob that differs is named
    assert 'reid/mAP' not in result.stdout + result.stderr


def test_an_unknown_cfg_option_key_names_the_closest(tree, tmp_path):
    result = _run(
        'tools/train.py',
        CONFIG,
        '--work-dir',
        tmp_path,
        '--data-root',
        tree,
        '--cfg-options',
        'optim_wraper.optimizer.lr=0.1',
    )
    _user_error(result, "'optim_wraper' matches nothing", "did you mean 'optim_wrapper'?")
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_misspelled_constructor_argument_names_class_key_and_closest(tree, tmp_path):
    result = _run(
        'tools/train.py',
        CONFIG,
        '--work-dir',
        tmp_path,
        '--data-root',
        tree,
        '--cfg-options',
        'model.backbone.num_semantic_promts=2',
    )
    _user_error(
        result,
        "model.backbone.num_semantic_promts: DMPTCLIPViT has no argument 'num_semantic_promts'",
        "did you mean 'num_semantic_prompts'?",
    )
    assert not any(tmp_path.iterdir())


def test_test_builds_only_what_testing_needs_into_its_own_folder(trained, tree, tmp_path):
    ckpt, _ = trained
    base = tmp_path / 'run'
    base.mkdir()
    (base / 'tiny.py').write_text('# the training run config dump: must stay as it is\n')
    result = _run(
        'tools/test.py',
        CONFIG,
        ckpt,
        '--data-root',
        tree,
        '--cfg-options',
        f'work_dir={base}',
        'model.head.num_classes=auto',
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "model.head.num_classes='auto' -> 6 (from the checkpoint)" in log
    assert "split 'test'" in log and "split 'train'" not in log  # no training set built
    assert 'IdentitySampler' not in log
    for noise in NOISE:
        assert noise not in log
    runs = [p for p in base.iterdir() if p.name.startswith('test_')]
    assert len(runs) == 1 and runs[0].is_dir()
    assert (base / 'tiny.py').read_text().startswith('# the training run config dump')


def test_a_failed_test_start_leaves_no_folder(trained, tmp_path):
    ckpt, _ = trained
    base = tmp_path / 'run'
    missing = tmp_path / 'nowhere'
    result = _run(
        'tools/test.py', CONFIG, ckpt, '--data-root', missing, '--cfg-options', f'work_dir={base}'
    )
    _user_error(result, f'data_root "{missing}"', 'does not exist', '--data-root PATH')
    assert not base.exists()


def test_check_data_lists_every_bad_image_before_training(tree, tmp_path):
    damaged = tmp_path / 'RGBNT201'
    damaged.mkdir()
    subprocess.run(['cp', '-r', f'{tree}/.', str(damaged)], check=True)
    images = sorted((damaged / 'train_171' / 'RGB').glob('*.jpg'))
    images[0].write_text('not an image')
    images[1].write_bytes(images[1].read_bytes()[:200])
    result = _run(
        'tools/train.py', CONFIG, '--work-dir', tmp_path / 'work', '--data-root', damaged,
        '--check-data',
    )  # fmt: skip
    _user_error(result, '--check-data: 2 bad file(s)')
    assert str(images[0]) in result.stdout and str(images[1]) in result.stdout
    assert 'Epoch(train)' not in result.stdout + result.stderr
