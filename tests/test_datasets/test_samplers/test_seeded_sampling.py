"""Seeded sampling: IdentitySampler's SeededIndex and the dataset's seeded pipeline.

The seeding helpers themselves are tested in ``tests/test_utils/test_seeding.py``.
"""

import random

import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate
from torch.utils.data import DataLoader

from mmdmpt.datasets import RGBNT201, IdentitySampler
from mmdmpt.datasets.samplers import SeededIndex
from mmdmpt.utils.seeding import derive_seeds, seed_global_rngs

AUGMENT = [
    dict(type='LoadMultiModalImages'),
    dict(
        type='TransformBroadcaster',
        mapping={'img': 'imgs'},
        auto_remap=True,
        share_random_params=True,
        transforms=[
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='ReIDRandomCrop', padding=6),
            dict(type='ReIDRandomErasing', prob=0.5, fill='random'),
        ],
    ),
    dict(type='PackMultiModalReIDInputs'),
]


@pytest.fixture(scope='module')
def dataset(trees):
    return RGBNT201(trees['rgbnt201'][0], split='train', pipeline=AUGMENT)


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_identity_sampler_yields_seeds_of_seed_epoch_rank_and_position(monkeypatch):
    class Labels:
        def __init__(self):
            self.labels = [pid for pid in range(6) for _ in range(8)]

        def __len__(self):
            return len(self.labels)

        def get_data_info(self, i):
            return dict(gt_label=self.labels[i])

    sampler = IdentitySampler(Labels(), batch_size=8, num_instances=4, seed=0)
    epoch0 = list(sampler)
    assert all(type(i) is SeededIndex for i in epoch0)
    seeds0 = [i.seed for i in epoch0]
    assert len(set(seeds0)) == len(seeds0)  # one seed per position
    assert [(int(i), i.seed) for i in sampler] == [(int(i), i.seed) for i in epoch0]
    sampler.set_epoch(1)
    assert not set(seeds0) & {i.seed for i in sampler}
    other = IdentitySampler(Labels(), batch_size=8, num_instances=4, seed=1)
    assert not set(seeds0) & {i.seed for i in other}
    # Same positions, another rank: other seeds.
    import mmdmpt.datasets.samplers.identity_sampler as module

    monkeypatch.setattr(module, 'get_dist_info', lambda: (1, 2))
    rank1 = IdentitySampler(Labels(), batch_size=8, num_instances=4, seed=0)
    assert not set(seeds0) & {i.seed for i in rank1}
    # Unshuffled: the same indices every epoch, other seeds.
    plain = IdentitySampler(Labels(), batch_size=8, num_instances=4, shuffle=False, seed=0)
    a = list(plain)
    plain.set_epoch(1)
    b = list(plain)
    assert [int(i) for i in a] == [int(i) for i in b]
    assert all(x.seed != y.seed for x, y in zip(a, b))


def _inputs(dataset, idx):
    return dataset[idx]['inputs']


def test_dataset_augments_by_the_seed_of_the_index(dataset):
    # The same seed: the same augmentation, whatever the global streams hold.
    seed_global_rngs(1)
    a = _inputs(dataset, SeededIndex(3, 111))
    seed_global_rngs(2)
    b = _inputs(dataset, SeededIndex(3, 111))
    assert torch.equal(a, b)
    # Other seeds (another epoch or position): other flips / crops / erasings.
    others = [_inputs(dataset, SeededIndex(3, s)) for s in derive_seeds(6, 5)]
    assert sum(not torch.equal(a, o) for o in others) >= 5
    # The global streams are left as they were.
    seed_global_rngs(7)
    expected_next = _draws()
    seed_global_rngs(7)
    _inputs(dataset, SeededIndex(3, 111))
    assert _draws() == expected_next
    # Plain ints still work, and draw from the global streams.
    seed_global_rngs(7)
    plain = _inputs(dataset, 3)
    assert plain.shape == a.shape
    assert _draws() != expected_next


def test_two_epochs_differ_and_one_epoch_repeats(dataset):
    sampler = IdentitySampler(dataset, batch_size=8, num_instances=4, seed=0)

    def epoch(e):
        sampler.set_epoch(e)
        return [(int(i), _inputs(dataset, i)) for i in sampler]

    first, again = epoch(0), epoch(0)
    assert all(i == j and torch.equal(x, y) for (i, x), (j, y) in zip(first, again))
    # An index drawn in both epochs is augmented differently in each.
    second = dict(epoch(1))
    common = [(x, second[i]) for i, x in first if i in second]
    assert common and sum(not torch.equal(x, y) for x, y in common) > len(common) // 2


def test_batches_do_not_depend_on_the_workers(dataset):
    def batches(num_workers):
        sampler = IdentitySampler(dataset, batch_size=8, num_instances=4, seed=0)
        loader = DataLoader(
            dataset,
            batch_size=8,
            sampler=sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            collate_fn=default_collate,
        )
        out = []
        for e in range(2):
            sampler.set_epoch(e)
            out += [b['inputs'] for b in loader]
        return out

    in_process, in_worker = batches(0), batches(1)
    assert len(in_process) == len(in_worker) > 0
    for x, y in zip(in_process, in_worker):
        assert torch.equal(x, y)
