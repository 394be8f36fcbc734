"""Per-sample seeds: the randomness of a sample is a function of where it is drawn.

A training run resumed from a checkpoint restarts its data loader: fresh worker
processes, whose random generators are not those the uninterrupted run had at
that epoch (with ``persistent_workers=True`` they continue across epochs). To
make augmentation independent of that, a sampler yields :class:`SeededIndex`
objects: ``int`` indices that also carry a seed derived from
``(run seed, epoch, rank, position in the epoch)``; the dataset seeds
``random``, ``numpy.random`` and torch's CPU generator from it while it loads
and transforms that sample (:func:`seeded_rngs`), then puts them back as they
were. The same sample at the same place of the same epoch is then augmented
identically whatever the number of workers, whether they persist, and
whether the run was interrupted; the main process's random streams are left
untouched.

Seeds are derived with :class:`numpy.random.SeedSequence`, a stable hash (not
Python's salted ``hash()``), so they are the same on every machine and run.
"""

import contextlib
import random
from typing import Iterator, Sequence

import numpy as np
import torch

#: Mask to map any Python int (negative ones included) to a SeedSequence word.
_MASK64 = (1 << 64) - 1

#: Domain tags, so that streams derived from the same numbers never coincide.
SAMPLE_TAG = 0x5A3B1E
EPOCH_TAG = 0xE90C
ITER_TAG = 0x17E2
EVAL_TAG = 0xE7A1


def _entropy(keys: Sequence[int]) -> list:
    out = []
    for key in keys:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise TypeError(f'seed keys must be ints, got {key!r} ({type(key).__name__}) in {keys}')
        out.append(int(key) & _MASK64)
    return out


def derive_seed(*keys: int) -> int:
    """A 64-bit seed that is a stable hash of ``keys``.

    Args:
        *keys (int): The numbers the seed depends on, e.g. ``(tag, seed,
            epoch, rank)``; negative ints are taken modulo ``2**64``.

    Returns:
        int: A seed in ``[0, 2**64)``.

    Raises:
        TypeError: If a key is not an int.
    """
    words = np.random.SeedSequence(_entropy(keys)).generate_state(1, np.uint64)
    return int(words[0])


def derive_seeds(num: int, *keys: int) -> np.ndarray:
    """``num`` 64-bit seeds, the ``i``-th a stable function of ``keys`` and ``i``.

    One vectorised call: cheaper than ``num`` calls of :func:`derive_seed`.

    Args:
        num (int): How many seeds.
        *keys (int): The numbers the seeds depend on.

    Returns:
        np.ndarray: ``num`` seeds, dtype ``uint64``.
    """
    return np.random.SeedSequence(_entropy(keys)).generate_state(int(num), np.uint64)


def seed_global_rngs(seed: int, devices: bool = False) -> None:
    """Seed ``random``, ``numpy.random`` and torch's CPU generator from ``seed``.

    Each generator gets its own words of ``SeedSequence(seed)``.

    Args:
        seed (int): Any int (taken modulo ``2**64``).
        devices (bool): Seed torch's device generators (CUDA, ...) too, with
            ``torch.manual_seed``; the data pipeline runs on the CPU and leaves
            them alone. Defaults to False.
    """
    seed = int(seed) & _MASK64
    words = np.random.SeedSequence(seed).generate_state(4, np.uint32)
    torch_seed = int(words[2]) << 32 | int(words[3])
    random.seed(seed)
    np.random.seed(words[:2])
    if devices:
        torch.manual_seed(torch_seed)
    else:
        torch.random.default_generator.manual_seed(torch_seed)


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Run a block with the global generators seeded from ``seed``, then restore them.

    The states of ``random``, ``numpy.random`` and torch's CPU generator are
    saved, the generators seeded with :func:`seed_global_rngs` and, when the
    block ends (also by an exception), set back to the saved states. In the
    main process (``num_workers=0``) the random streams of the rest of the
    program are therefore the same as with worker processes.

    Args:
        seed (int): The seed of the block.

    Yields:
        None
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.random.default_generator.get_state()
    try:
        seed_global_rngs(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.default_generator.set_state(torch_state)


class SeededIndex(int):
    """A dataset index that also carries the seed of the sample's randomness.

    It is an ``int`` (equal to, hashing and indexing like ``index``), so code
    that expects a plain index keeps working; datasets that know it (see
    :class:`~mmdmpt.datasets.BaseMultiModalReIDDataset`) run the pipeline in
    :func:`seeded_rngs` ``(seed)``. Arithmetic returns plain ints. It pickles
    with its seed, so it crosses to data-loader worker processes.

    Args:
        index (int): The dataset index.
        seed (int): The seed of the sample, in ``[0, 2**64)``.
    """

    seed: int

    def __new__(cls, index: int, seed: int) -> 'SeededIndex':
        """Make the index ``index`` carrying ``seed``."""
        obj = super().__new__(cls, index)
        obj.seed = int(seed)
        return obj

    def __reduce__(self):
        return (SeededIndex, (int(self), self.seed))

    def __repr__(self) -> str:
        return f'SeededIndex({int(self)}, seed={self.seed})'

    def __str__(self) -> str:
        return str(int(self))
