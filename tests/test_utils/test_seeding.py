"""Per-sample seeds: stable derived seeds, SeededIndex and the seeded global generators."""

import pickle
import random

import numpy as np
import pytest
import torch

from mmdmpt.utils.seeding import (
    SeededIndex,
    derive_seed,
    derive_seeds,
    seed_global_rngs,
    seeded_rngs,
)


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_seeded_index_is_an_int_that_keeps_its_seed():
    idx = SeededIndex(7, 2**64 - 1)
    assert isinstance(idx, int) and idx == 7 and hash(idx) == hash(7)
    assert [10, 11, 12, 13, 14, 15, 16, 17][idx] == 17
    assert str(idx) == '7' and f'{idx}' == '7' and 'seed=' in repr(idx)
    assert type(idx + 1) is int and type(int(idx)) is int
    back = pickle.loads(pickle.dumps(idx))
    assert type(back) is SeededIndex and back == 7 and back.seed == 2**64 - 1


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, 2, 3), derive_seed(1, 2, 4), derive_seed(1, 3, 2)}) == 3
    assert 0 <= derive_seed(-1, 5) < 2**64 and derive_seed(-1, 5) == derive_seed(2**64 - 1, 5)
    many = derive_seeds(50, 9, 1)
    assert many.dtype == np.uint64 and len(set(many.tolist())) == 50
    assert derive_seeds(5, 9, 1).tolist() == many[:5].tolist()
    with pytest.raises(TypeError, match=r'seed keys must be ints, got 1\.5'):
        derive_seed(1.5)


def test_seeded_rngs_are_reproducible_and_restore_the_global_streams():
    seed_global_rngs(123)
    expected_next = _draws()
    seed_global_rngs(123)
    with seeded_rngs(42):
        first = _draws()
    assert _draws() == expected_next  # the outer streams went on untouched
    with seeded_rngs(42):
        assert _draws() == first
    with seeded_rngs(43):
        assert _draws() != first
    # The states come back after an error too.
    seed_global_rngs(123)
    with pytest.raises(RuntimeError), seeded_rngs(42):
        _draws()
        raise RuntimeError
    assert _draws() == expected_next
