"""Shared fixtures: small synthetic trees and image writers."""

import os
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope

from mmdmpt.testing import make_synthetic

# Small trees: 12 ids in families of 3, 6 train ids (2 families), 2 samples
# per (id, camera), tiny images.
TREE_ARGS = dict(num_ids=12, train_ids=6, samples_per_camera=2, seed=3, family_size=3)
SIZES = {'rgbnt201': (64, 32), 'rgbnt100': (32, 64), 'msvr310': (32, 64), 'wmveid863': (32, 64)}


@pytest.fixture(scope='session', autouse=True)
def mmdmpt_scope():
    init_default_scope('mmdmpt')
    return 'mmdmpt'


@pytest.fixture(scope='session')
def trees(tmp_path_factory):
    """layout -> (root, summary) of small synthetic trees, written once."""
    base = tmp_path_factory.mktemp('synthetic')
    out = {}
    for layout, (h, w) in SIZES.items():
        root = str(base / layout)
        summary = make_synthetic(root, layout=layout, height=h, width=w, **TREE_ARGS)
        out[layout] = (root, summary)
    return out


def write_image(path, img, ext_ok=True):
    """Write an RGB (HxWx3) or grey (HxW) uint8 image, making folders."""
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    img = np.asarray(img, np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ext = osp.splitext(str(path))[1].lower()
    ext = ext if ext in ('.jpg', '.jpeg', '.png', '.bmp') else '.png'
    ok, buf = cv2.imencode(ext, img)
    assert ok
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def const(value, shape=(16, 8)):
    """A constant grey image."""
    return np.full(shape, value, np.uint8)


@pytest.fixture
def writer():
    return write_image


@pytest.fixture
def const_img():
    return const
