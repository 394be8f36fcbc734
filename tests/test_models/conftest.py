"""Shared fixtures: tiny CLIP configs and weight files written by the tests."""

import copy
import warnings

import pytest
import torch
from mmengine.registry import init_default_scope

TINY_TEXT = dict(width=64, layers=2, heads=2, context_length=77, vocab_size=49408)


def tiny_clip_cfg(layers: int = 4, heads: int = 2, image_size=32, patch_size: int = 8) -> dict:
    """A tiny open_clip CLIP config (dict form accepted by DMPTCLIPViT)."""
    return dict(
        embed_dim=32,
        vision_cfg=dict(
            width=64, layers=layers, heads=heads, patch_size=patch_size, image_size=image_size
        ),
        text_cfg=dict(TINY_TEXT, heads=heads),
    )


def open_clip_model(cfg: dict, image_size, quick_gelu: bool = False, seed: int = 0):
    """A plain open_clip CLIP built from a tiny dict config at ``image_size``."""
    from open_clip.model import CLIP

    cfg = copy.deepcopy(cfg)
    vision = cfg['vision_cfg']
    vision['head_width'] = vision['width'] // vision.pop('heads')
    vision['image_size'] = image_size
    torch.manual_seed(seed)
    return CLIP(cfg['embed_dim'], vision, cfg['text_cfg'], quick_gelu=quick_gelu).eval()


@pytest.fixture(scope='session')
def mmdmpt_scope():
    init_default_scope('mmdmpt')
    return 'mmdmpt'


@pytest.fixture(scope='session')
def tiny_cfg():
    """Factory of tiny CLIP configs."""
    return tiny_clip_cfg


@pytest.fixture(scope='session')
def clip_factory():
    """Factory of plain open_clip models (the references)."""
    return open_clip_model


@pytest.fixture(scope='session')
def tiny_weights(tmp_path_factory):
    """A GELU open_clip state dict (.pt) for a 4-layer tiny CLIP at 32x32 (4x4 grid)."""
    path = tmp_path_factory.mktemp('weights') / 'tiny_clip.pt'
    model = open_clip_model(tiny_clip_cfg(layers=4), 32, quick_gelu=False, seed=1)
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope='session')
def openai_archive(tmp_path_factory):
    """A tiny OpenAI-style TorchScript archive: traced, fp16, QuickGELU weights.

    Like OpenAI's release it is a ``torch.jit`` archive whose state dict
    holds OpenAI's key names plus ``input_resolution``, ``context_length``
    and ``vocab_size``, and 64-wide heads (so ``open_clip.load_openai_model``,
    which infers heads = width // 64, reads it too).
    """
    path = tmp_path_factory.mktemp('openai') / 'tiny-openai.pt'
    model = open_clip_model(tiny_clip_cfg(layers=3, heads=1), 32, quick_gelu=True, seed=2)
    del model.attn_mask  # OpenAI keeps the causal mask outside the state dict
    # OpenAI's archive also carries these three entries in its state dict.
    model.register_buffer('input_resolution', torch.tensor(32))
    for name, value in (('context_length', 77), ('vocab_size', 49408)):
        delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace_module(
            model, dict(encode_image=(torch.zeros(1, 3, 32, 32),)), check_trace=False
        )
        traced = traced.half()
        torch.jit.save(traced, str(path))
    return str(path)


@pytest.fixture(scope='package', autouse=True)
def _single_thread():
    """Tiny models run fastest on one thread, above all on shared, busy cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
