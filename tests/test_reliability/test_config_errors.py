"""Guarantee 6: a bad config value fails before the first training step, clearly.

Each test trains the tiny DMPT config (``tests/data/tiny_dmpt_rgbnt201.py``) on a tiny
synthetic RGBNT201 tree the way ``tools/train.py`` does (in-process: its argument parser,
``merge_args`` and ``missing_inputs``, then the Runner), with one bad value given as a
``--cfg-options`` entry, and checks the exception type and that its message names the key,
the bad value and what is expected; and that no iteration ran.
"""

from pathlib import Path

import pytest
from mmengine.runner import BaseLoop

from mmdmpt.testing import load_script


def _tiny():
    return load_script(
        Path(__file__).with_name('tiny_train.py'), 'mmdmpt_tests_reliability_tiny_train'
    )


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    # 6 training ids (whole families of 3) with 8 samples each (4 cameras x 2)
    return _tiny().make_tree(str(tmp_path_factory.mktemp('config_errors') / 'RGBNT201'))


def _train(tree, work_dir, *options, error):
    """Train with ``options``; return the message of the ``error`` raised before any step."""
    tiny = _tiny()
    cfg = tiny.build_cfg(tree, work_dir, options)
    assert tiny.train_tool().missing_inputs(cfg) == []
    runner = None
    with pytest.raises(error) as info:
        runner = tiny.build_runner(cfg)
        runner.train()
    loop = getattr(runner, '_train_loop', None)  # a dict when building it failed
    if isinstance(loop, BaseLoop):
        assert loop.iter == 0, 'a training step ran before the error'
    return ' '.join(str(info.value).split())


def _assert_names(text, *parts):
    for part in parts:
        assert part in text, f'{part!r} not in: {text}'


def test_unknown_modality_name_in_the_dataset(tree, tmp_path):
    text = _train(
        tree, tmp_path, 'train_dataloader.dataset.modalities=[rgb,depth]', error=ValueError
    )
    _assert_names(text, "unknown modality 'depth'", "expected names among ('rgb', 'nir', 'tir')")


def test_unknown_modality_name_in_the_model(tree, tmp_path):
    text = _train(tree, tmp_path, 'model.backbone.modalities=[rgb,lidar]', error=ValueError)
    _assert_names(
        text,
        "model.backbone.modality_words: no word for the modalities ['lidar']",
        "modality_words=dict(lidar='lidar')",
    )


@pytest.mark.parametrize(
    'option, key, value',
    [
        ('train_dataloader.dataset.modalities=[rgb,tir]', 'train_dataloader', "('rgb', 'tir')"),
        # the validation set is checked before training too, not after the first epoch
        (
            'val_dataloader.dataset.modalities=[tir,nir,rgb]',
            'val_dataloader',
            "('tir', 'nir', 'rgb')",
        ),
    ],
)
def test_modalities_that_do_not_match_the_dataset(tree, tmp_path, option, key, value):
    text = _train(tree, tmp_path, option, error=ValueError)
    _assert_names(
        text,
        "model.backbone.modalities=('rgb', 'nir', 'tir')",
        f'{key}.dataset yields modalities {value}',
        'must be the same names in the same order',
    )


def test_batch_size_not_divisible_by_num_instances(tree, tmp_path):
    options = ('train_dataloader.batch_size=10', 'train_dataloader.sampler.batch_size=10')
    text = _train(tree, tmp_path, *options, error=ValueError)
    _assert_names(
        text,
        'IdentitySampler',
        'batch_size=10 is not divisible by num_instances=4',
        'a batch holds P identities x K samples',
    )


def test_num_instances_above_every_identity_count_without_replacement(tree, tmp_path):
    # every training id has 8 samples; K=9 without replacement leaves none usable
    options = (
        'train_dataloader.batch_size=18',
        'train_dataloader.sampler.batch_size=18',
        'train_dataloader.sampler.num_instances=9',
        'train_dataloader.sampler.with_replacement=False',
    )
    text = _train(tree, tmp_path, *options, error=ValueError)
    _assert_names(
        text,
        'train_dataloader.sampler.num_instances=9 is larger than every identity',
        'sample count (largest: 8)',
        'with_replacement=False',
        'expected num_instances <= 8 or with_replacement=True',
    )


def test_too_few_usable_identities_for_a_batch(tree, tmp_path):
    # 6 training ids; P=8 ids per batch cannot be met even with replacement
    options = (
        'train_dataloader.batch_size=16',
        'train_dataloader.sampler.batch_size=16',
        'train_dataloader.sampler.num_instances=2',
    )
    text = _train(tree, tmp_path, *options, error=ValueError)
    _assert_names(
        text,
        'IdentitySampler: 6 usable identities',
        'train_dataloader.sampler.num_instances=2',
        'a batch needs P=batch_size//num_instances=8 distinct identities',
    )


def test_image_size_not_divisible_by_the_patch_size(tree, tmp_path):
    text = _train(tree, tmp_path, 'model.backbone.img_size=[60,32]', error=ValueError)
    _assert_names(
        text,
        'img_size=(60, 32) (model.backbone.img_size',
        'is not divisible by the patch size 16',
        'expected H a multiple of 16 and W a multiple of 16, e.g. (64, 32)',
    )


def test_classifier_size_differs_from_the_training_ids(tree, tmp_path):
    text = _train(tree, tmp_path, 'model.head.num_classes=5', error=ValueError)
    _assert_names(
        text,
        'model.head.num_classes=5',
        "the training set (RGBNT201, split 'train') has 6 identities",
        'set model.head.num_classes=6',
    )


def test_missing_pretrained_file(tree, tmp_path, capsys):
    weights = str(tmp_path / 'nowhere' / 'ViT-B-16.pt')
    option = f'model.backbone.pretrained={weights}'
    tiny = _tiny()
    # tools/train.py names it before building anything
    argv = ['tools/train.py', str(tiny.CONFIG), '--work-dir', str(tmp_path), '--cfg-options']
    argv += [f'{k}_dataloader.dataset.data_root={tree}' for k in ('train', 'val', 'test')]
    tool = tiny.train_tool()
    assert tool.run_tool(tool.main, [*argv[1:], option]) == 2  # a user error: exit status 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    text = ' '.join(err.split())
    _assert_names(
        text,
        'Cannot start training, missing inputs',
        f'model.backbone.pretrained: weight file "{weights}" does not exist',
        'model.backbone.pretrained=None',
    )
    # the model itself refuses it too (a Runner built without tools/train.py)
    cfg = tiny.build_cfg(tree, tmp_path, [option])
    with pytest.raises(FileNotFoundError) as info:
        tiny.build_runner(cfg)
    _assert_names(
        ' '.join(str(info.value).split()),
        f'CLIP weight file not found: {weights}',
        'set pretrained=None for random weights',
    )


def test_no_validate_with_val_options_drops_validation(tree, tmp_path):
    # --no-validate applies after --cfg-options that name val_dataloader keys
    cfg = _tiny().build_cfg(tree, str(tmp_path / 'work'), flags=('--no-validate',))
    assert cfg.val_dataloader is None and cfg.val_cfg is None and cfg.val_evaluator is None
