import numpy as np
import pytest
from mmcv.transforms import RandomFlip, Resize, TransformBroadcaster

from mmdmpt.datasets import ReIDRandomCrop, ReIDRandomErasing
from mmdmpt.registry import TRANSFORMS


def _aug(share=True, erase_fill=127):
    return TRANSFORMS.build(
        dict(
            type='TransformBroadcaster',
            mapping={'img': 'imgs'},
            auto_remap=True,
            share_random_params=share,
            transforms=[
                dict(type='Resize', scale=(32, 64), interpolation='bicubic'),
                dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                dict(type='ReIDRandomCrop', padding=10),
                dict(type='ReIDRandomErasing', prob=0.5, fill=erase_fill),
            ],
        )
    )


def _image(seed=0, shape=(48, 24, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_mmcv_transforms_registered():
    for name, cls in (
        ('TransformBroadcaster', TransformBroadcaster),
        ('Resize', Resize),
        ('RandomFlip', RandomFlip),
    ):
        assert TRANSFORMS.get(name) is cls
    # their randomness is drawn in cached methods
    assert RandomFlip._methods_with_randomness == ['_choose_direction']
    assert ReIDRandomCrop._methods_with_randomness == ['_crop_offset']
    assert ReIDRandomErasing._methods_with_randomness == ['_box']


@pytest.mark.parametrize('fill', [127, 'random'])
def test_shared_params_keep_modalities_aligned(fill):
    aug = _aug(share=True, erase_fill=fill)
    np.random.seed(0)
    outs = []
    for s in range(20):
        img = _image(s)
        out = aug({'imgs': [img.copy(), img.copy(), img.copy()]})['imgs']
        assert all(o.shape == (64, 32, 3) for o in out)
        assert all(np.array_equal(out[0], o) for o in out[1:])
        outs.append(out[0])
    # randomness differs across samples: the same input gives different outputs
    img = _image(99)
    results = [aug({'imgs': [img.copy()] * 1})['imgs'][0] for _ in range(8)]
    assert any(not np.array_equal(results[0], r) for r in results[1:])


def test_independent_params_differ():
    aug = _aug(share=False)
    np.random.seed(1)
    differs = 0
    for s in range(10):
        img = _image(s)
        out = aug({'imgs': [img.copy(), img.copy(), img.copy()]})['imgs']
        differs += any(not np.array_equal(out[0], o) for o in out[1:])
    assert differs >= 8


def test_crop_content():
    img = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)
    crop = ReIDRandomCrop(padding=2)
    for _ in range(20):
        out = crop({'img': img})['img']
        assert out.shape == (6, 4)
    # explicit offsets: padded window at (0, 0) shifts the image by +2, +2
    crop._crop_offset = lambda h, w: (0, 0)
    out = crop({'img': img})['img']
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all()
    np.testing.assert_array_equal(out[2:, 2:], img[:4, :2])
    crop._crop_offset = lambda h, w: (4, 4)
    out = crop({'img': img})['img']
    np.testing.assert_array_equal(out[:4, :2], img[2:, 2:])
    assert (out[4:] == 0).all() and (out[:, 2:] == 0).all()
    out = ReIDRandomCrop(padding=0)({'img': img})['img']
    np.testing.assert_array_equal(out, img)
    out = ReIDRandomCrop(padding=3, crop_size=(4, 2))({'img': img, 'img_shape': (6, 4)})
    assert out['img'].shape == (4, 2) and out['img_shape'] == (4, 2)
    with pytest.raises(ValueError, match='padding must be >= 0'):
        ReIDRandomCrop(padding=-1)


def test_erasing_box_and_fill():
    np.random.seed(0)
    erase = ReIDRandomErasing(prob=1.0)
    h, w = 64, 32
    for _ in range(50):
        box = erase._box(h, w)
        assert box is not None
        top, left, bh, bw, _ = box
        assert 0 < bh < h and 0 < bw < w and top + bh <= h and left + bw <= w
        assert 0.02 * h * w * 0.8 <= bh * bw <= 0.4 * h * w * 1.2
    img = np.zeros((h, w, 3), np.uint8)
    out = erase({'img': img})['img']
    assert set(np.unique(out)) == {0, 127}
    assert ReIDRandomErasing(prob=0.0)({'img': np.zeros((h, w, 3), np.uint8)})['img'].max() == 0
    noisy = ReIDRandomErasing(prob=1.0, fill='random')({'img': np.zeros((h, w, 3), np.uint8)})[
        'img'
    ]
    assert len(np.unique(noisy)) > 10
    with pytest.raises(ValueError, match='prob must be in'):
        ReIDRandomErasing(prob=1.5)
    with pytest.raises(ValueError, match="fill must be a number, a sequence or 'random'"):
        ReIDRandomErasing(fill='mean')
