"""Helpers shared by tests/test_apis, tests/test_visualization and tests/test_tools.

Loaded by path (``load_common()`` in each conftest / test module), as pytest
runs with ``--import-mode=importlib``.
"""

import copy
import os.path as osp

import torch
from mmengine.config import Config

from mmdmpt.testing import make_synthetic

IMG = (64, 32)  # (H, W)
MODS = ('rgb', 'nir', 'tir')
TREE_ARGS = dict(num_ids=12, train_ids=6, samples_per_camera=2, seed=3, family_size=3)
TEXT_CFG = dict(width=64, layers=2, heads=2, context_length=77, vocab_size=49408)


def clip_cfg(layers: int = 2) -> dict:
    return dict(
        embed_dim=32,
        vision_cfg=dict(width=64, layers=layers, heads=2, patch_size=16),
        text_cfg=dict(TEXT_CFG),
    )


def make_tree(root: str) -> str:
    """A tiny RGBNT201 tree: 6 test ids x 2 cameras x 2 samples at 64x32."""
    if not osp.isdir(osp.join(root, 'test')):
        make_synthetic(root, layout='rgbnt201', height=IMG[0], width=IMG[1], **TREE_ARGS)
    return root


def test_pipeline() -> list:
    return [
        dict(type='LoadMultiModalImages'),
        dict(
            type='TransformBroadcaster',
            mapping={'img': 'imgs'},
            auto_remap=True,
            transforms=[dict(type='Resize', scale=(IMG[1], IMG[0]), interpolation='bicubic')],
        ),
        dict(type='PackMultiModalReIDInputs'),
    ]


def tiny_config(data_root: str, pretrained=None, bind: bool = False, **extra) -> Config:
    """A complete tiny test config (model, data, metric) as the Runner wants it."""
    backbone = dict(
        type='DMPTCLIPViT',
        clip_model=clip_cfg(layers=3 if bind else 2),
        img_size=IMG,
        num_modality_prompts=2,
        num_semantic_prompts=2,
        num_bind_prompts=1 if bind else 0,
        pretrained=pretrained,
    )
    cfg = dict(
        default_scope='mmdmpt',
        model=dict(
            type='MultiModalReID',
            backbone=backbone,
            head=dict(type='BNNeckHead', in_channels=3 * 64, num_classes=6),
        ),
        data_preprocessor=dict(type='MultiModalDataPreprocessor'),
        test_dataloader=dict(
            batch_size=16,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            dataset=dict(
                type='RGBNT201', data_root=data_root, split='test', pipeline=test_pipeline()
            ),
        ),
        test_evaluator=dict(type='ReIDMetric'),
    )
    cfg.update(copy.deepcopy(extra))
    return Config(cfg)


def write_clip_weights(path: str, seed: int = 1) -> str:
    """An open_clip state dict (.pt) fitting clip_cfg(layers=2) (trained at 32x32)."""
    from open_clip.model import CLIP

    vision = dict(width=64, layers=2, head_width=32, patch_size=16, image_size=32)
    torch.manual_seed(seed)
    model = CLIP(32, vision, dict(TEXT_CFG))
    torch.save(model.state_dict(), path)
    return path


def build_model(cfg: Config, seed: int = 0):
    """Build cfg.model (with the top-level data preprocessor) in eval mode."""
    from mmengine.registry import DefaultScope

    from mmdmpt.registry import MODELS

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmdmpt'):
        return MODELS.build(model_cfg).eval()


def save_checkpoint(model, path: str, trainable_only: bool = False) -> str:
    """A checkpoint like SafeCheckpointHook writes (tensors and primitives only)."""
    state = model.trainable_state_dict() if trainable_only else model.state_dict()
    meta = dict(epoch=1, trainable_only=True) if trainable_only else dict(epoch=1)
    torch.save(dict(meta=meta, state_dict=state), path)
    return path
