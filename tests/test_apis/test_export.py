"""mmdmpt.apis.export: the ONNX file of the tiny model against PyTorch, with onnxruntime."""

import types

import onnx
import pytest
import torch

from mmdmpt.apis.export import (
    INPUT_NAMES,
    OUTPUT_NAME,
    check_export_target,
    check_onnx_file,
    export_onnx,
    load_test_images,
    mask_patterns,
    onnx_features,
    onnx_session,
    parity_rows,
)
from mmdmpt.utils.errors import ConfigError

ATOL = 1e-4


@pytest.fixture(scope='module')
def exported(tmp_path_factory, common, tree):
    """The tiny DMPT model (PromptIBind, post-BN feature) exported with a dynamic batch."""
    cfg = common.tiny_config(tree, bind=True)
    cfg.model.head.test_feature = 'after'
    model = common.build_model(cfg, seed=7)
    bn = model.head.bnneck
    bn.running_mean.normal_(0, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    path = str(tmp_path_factory.mktemp('onnx') / 'sub' / 'tiny.onnx')  # folder created
    info = export_onnx(model, path, dynamic_batch=True)
    return dict(cfg=cfg, model=model, path=path, info=info, session=onnx_session(path))


def test_file_layout(exported, common):
    info, session = exported['info'], exported['session']
    assert info['batch'] == 'dynamic' and info['feature_dim'] == 3 * 64
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert [i.name for i in inputs] == list(INPUT_NAMES)
    assert [o.name for o in outputs] == [OUTPUT_NAME]
    batch = inputs[0].shape[0]
    assert isinstance(batch, str)  # a named dynamic axis
    assert inputs[0].shape == [batch, 3, 3, *common.IMG] and inputs[0].type == 'tensor(float)'
    assert inputs[1].shape == [batch, 3] and inputs[1].type == 'tensor(bool)'
    assert outputs[0].shape == [batch, 192]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta['mmdmpt.modalities'] == 'rgb,nir,tir' and meta['mmdmpt.img_size'] == '64x32'


def test_weights_and_prompts_are_folded(exported):
    """No node computes on constants only: prompts and weight slices are stored results."""
    model = onnx.load(exported['path'])
    assert model.opset_import[0].version == 18
    constants = {i.name for i in model.graph.initializer}
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    constant_only = [
        n.op_type for n in model.graph.node if n.input and all(x in constants for x in n.input if x)
    ]
    assert constant_only == []
    # the modality knowledge (M, L_t, d_t) is not stored: only the prompts it gives
    assert not any(tuple(i.dims) == (3, 2, 64) for i in model.graph.initializer)


def test_parity_on_every_mask_random_and_real(exported, common):
    model, session = exported['model'], exported['session']
    gen = torch.Generator().manual_seed(0)
    random = torch.rand(3, 3, 3, *common.IMG, generator=gen) * 255.0
    real = load_test_images(exported['cfg'], 8)
    assert real.dtype == torch.uint8 and real.shape == (8, 3, 3, *common.IMG)
    rows = parity_rows(model, session, random, 'random') + parity_rows(model, session, real, 'real')
    masks = ['rgb+nir+tir', 'rgb+nir', 'rgb+tir', 'nir+tir', 'rgb', 'nir', 'tir', 'mixed']
    assert [r['mask'] for r in rows] == masks * 2
    assert all(r['max_abs'] > 0.1 for r in rows)  # features, not zeros
    worst = max(r['max_abs_diff'] for r in rows)
    assert worst <= ATOL, rows


def test_batch_of_one_and_a_sample_without_modalities(exported, common):
    model, session = exported['model'], exported['session']
    images = torch.rand(2, 3, 3, *common.IMG) * 255.0
    mask = torch.tensor([[False, True, False], [False, False, False]])
    out = onnx_features(session, images, mask)
    assert torch.equal(out[1], torch.zeros(192))
    one = onnx_features(session, images[:1], mask[:1])
    assert torch.allclose(one, out[:1], atol=1e-6)
    assert (
        parity_rows(model, session, images[:1], 'random', [(False, True, False)])[0]['max_abs_diff']
        <= ATOL
    )


def test_a_file_of_another_model_is_refused(exported):
    other = types.SimpleNamespace(
        backbone=types.SimpleNamespace(
            modalities=('rgb', 'tir'), img_size=(64, 32), out_channels=64
        )
    )
    with pytest.raises(ConfigError, match="modalities: file 'rgb,nir,tir', model 'rgb,tir'"):
        check_onnx_file(exported['session'], other, 'tiny.onnx')
    check_onnx_file(exported['session'], exported['model'])


def test_mask_patterns():
    masks = mask_patterns(3)
    assert len(masks) == 7 and masks[0] == (True, True, True) and (False, False, False) not in masks
    assert len(set(mask_patterns(4))) == 15


@pytest.mark.parametrize(
    'output, opset, message',
    [
        ('model.onnx', 17, r'opset 17 \(--opset\) is not supported.*18-23'),
        ('model.onx', 18, 'must end in .onnx'),
        ('folder.onnx', 18, 'is a directory'),
        ('a_file/model.onnx', 18, 'is a file'),
    ],
)
def test_bad_targets_are_user_errors(tmp_path, output, opset, message):
    (tmp_path / 'folder.onnx').mkdir()
    (tmp_path / 'a_file').write_text('x')
    with pytest.raises(ConfigError, match=message):
        check_export_target(str(tmp_path / output), opset)
