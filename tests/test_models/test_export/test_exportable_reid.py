"""ExportableReID (PyTorch only): equal to the eager model for every modality mask.

The eager ``MultiModalReID`` (its data preprocessor, then
``model(..., mode='tensor')``) is the reference, whatever the backbone's
forward looks like when these tests run.
"""

import itertools

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.structures import BaseDataElement

from mmdmpt.models.export import ExportableReID, preprocessor_stats
from mmdmpt.registry import MODELS
from mmdmpt.utils.errors import ConfigError

MODS = ('rgb', 'nir', 'tir')
IMG = (32, 16)
ALL_MASKS = [m for m in itertools.product((True, False), repeat=3) if any(m)]


def build(seed: int = 0, preprocessor=None, head=None, **backbone):
    """A tiny MultiModalReID (4 layers, width 64, 8x8 patches) in eval mode."""
    cfg = dict(
        type='DMPTCLIPViT',
        clip_model=dict(
            embed_dim=32,
            vision_cfg=dict(width=64, layers=4, heads=2, patch_size=8),
            text_cfg=dict(width=64, layers=2, heads=2, context_length=77, vocab_size=49408),
        ),
        img_size=IMG,
        num_modality_prompts=2,
        num_semantic_prompts=2,
        num_bind_prompts=1,
        bind_layers=(1,),  # B'_1 joins layer 2 only, not layer 3
    )
    cfg.update(backbone)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmdmpt'):
        model = MODELS.build(
            dict(
                type='MultiModalReID',
                backbone=cfg,
                head=dict(type='BNNeckHead', num_classes=4, **(head or {})),
                data_preprocessor=preprocessor or dict(type='MultiModalDataPreprocessor'),
            )
        )
    bn = model.head.bnneck  # eval statistics that are not the identity
    bn.running_mean.normal_(0, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def eager(model, images, mask):
    samples = [
        BaseDataElement(metainfo=dict(modalities=MODS, modality_mask=row.numpy())) for row in mask
    ]
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=images, data_samples=samples), False)
        return model(data['inputs'], data['data_samples'], mode='tensor')


def images(num: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num, 3, 3, *IMG), generator=gen).float()


def worst_over_masks(model, num: int = 3) -> float:
    """Max abs difference over every mask (whole batch) and a batch mixing them."""
    wrapper = ExportableReID(model)
    x = images(num)
    masks = [torch.tensor(m).expand(num, 3).clone() for m in ALL_MASKS]
    masks.append(torch.tensor([ALL_MASKS[i % 7] for i in range(num)]))
    worst = 0.0
    for mask in masks:
        ref = eager(model, x, mask)
        with torch.no_grad():
            out = wrapper(x, mask)
        assert out.shape == ref.shape == (num, wrapper.feature_dim)
        worst = max(worst, float((out - ref).abs().max()))
    return worst


def test_every_mask_equals_the_eager_model():
    model = build(head=dict(test_feature='after'))
    assert worst_over_masks(model, num=7) < 1e-5


@pytest.mark.parametrize(
    'layout',
    [
        # consecutive bind layers (B'_1 appended while B_2 binds), VPT carry-over of SP
        # (layers 1 and 3 carry layer 0's / 2's outputs), MSP on one layer, prompt feature
        dict(
            bind_layers=(1, 2),
            semantic_prompt_layers=(0, 2),
            modality_prompt_layers=(1,),
            feature='cls_prompt',
        ),
        # no prompts at all (the frozen tower alone), projected class token
        dict(
            num_modality_prompts=0, num_semantic_prompts=0, num_bind_prompts=0, feature='cls_proj'
        ),
    ],
    ids=['bind12_sp02_msp1_cls_prompt', 'no_prompts_cls_proj'],
)
def test_prompt_layouts(layout):
    assert worst_over_masks(build(seed=1, **layout)) < 1e-5


def test_per_modality_normalisation_is_in_the_graph():
    preprocessor = dict(
        type='MultiModalDataPreprocessor',
        mean={'tir': [90.0, 90.0, 90.0], 'rgb': [123.7, 116.3, 103.5], 'nir': [60.0, 61.0, 62.0]},
        std={'rgb': [58.4, 57.1, 57.4], 'nir': [40.0, 41.0, 42.0], 'tir': [30.0, 30.0, 30.0]},
        modalities=MODS,
    )
    model = build(seed=2, preprocessor=preprocessor)
    mean, std = preprocessor_stats(model.data_preprocessor, MODS)
    assert mean[2].tolist() == pytest.approx([90.0] * 3, abs=1e-4)  # ordered by modality
    assert std[0].tolist() == pytest.approx([58.4, 57.1, 57.4], abs=1e-4)
    assert worst_over_masks(model) < 1e-5


def test_absent_images_are_ignored_and_an_empty_sample_is_zero():
    model = build(seed=3)
    wrapper = ExportableReID(model)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    x = images(2)
    noisy = x.clone()
    noisy[0, 1] = torch.rand(3, *IMG) * 1e4  # an absent modality: anything
    noisy[1] = float('nan')  # a sample with nothing present
    with torch.no_grad():
        out, out_noisy = wrapper(x, mask), wrapper(noisy, mask)
    assert torch.equal(out[0], out_noisy[0])
    assert torch.equal(out_noisy[1], torch.zeros_like(out_noisy[1]))
    assert torch.equal(out[0, 64:128], torch.zeros(64))  # the absent NIR slice


def test_the_wrapper_shares_the_model_and_stays_in_eval_mode():
    model = build(seed=4)
    wrapper = ExportableReID(model)
    assert wrapper.backbone is model.backbone and wrapper.head is model.head
    wrapper.train()
    assert not wrapper.training and not model.head.training


def test_a_block_it_cannot_reproduce_is_refused():
    model = build(seed=5)
    model.backbone.visual.transformer.resblocks[1].attn = torch.nn.Identity()
    with pytest.raises(ConfigError, match='visual block 1 .*attention Identity'):
        ExportableReID(model)


def test_a_non_affine_preprocessor_is_refused():
    class Squares(torch.nn.Module):
        def forward(self, data, training=False):
            return dict(inputs=data['inputs'].float() ** 2, data_samples=data['data_samples'])

    with pytest.raises(ConfigError, match='not a per-channel'):
        preprocessor_stats(Squares(), MODS)
