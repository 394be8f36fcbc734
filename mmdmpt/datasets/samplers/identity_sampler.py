"""P x K identity sampler, distributed-aware."""

import math
from typing import Dict, Iterator, List, Optional, Sized

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from torch.utils.data import Sampler

from mmdmpt.registry import DATA_SAMPLERS
from mmdmpt.utils.errors import ConfigError
from mmdmpt.utils.seeding import SAMPLE_TAG, SeededIndex, derive_seeds


@DATA_SAMPLERS.register_module()
class IdentitySampler(Sampler):
    """Yield batches of P identities x K samples each.

    Every consecutive ``batch_size`` indices this sampler yields hold
    ``P = batch_size // num_instances`` distinct identities with
    ``K = num_instances`` samples each, so the dataloader's ``batch_size``
    must equal this one.

    An epoch is planned from ``(seed, epoch)`` alone, identically on every
    rank:

    1. The usable identities are shuffled and dealt round-robin to the
       ``world_size`` ranks, so each rank owns a disjoint set of identities
       for the epoch (each rank needs at least P of them).
    2. Each identity's samples are shuffled and cut into chunks of K. When
       ``with_replacement`` is True a short last chunk is completed with other
       samples of the identity (distinct ones while the identity has at least
       K samples, repeats only for identities with fewer than K); otherwise it
       is dropped.
    3. Every rank yields the same number of batches,
       ``B = (total chunks of all ranks) // (P * world_size)``. A batch takes
       one chunk from each of P distinct identities of the rank, drawn with
       probability proportional to their chunks left; an identity whose
       chunks are used up gets a fresh set (a new shuffled pass).

    With ``shuffle=False`` identities are dealt and used in sorted order,
    samples in index order, and every epoch is the same.

    Every index is yielded as a :class:`~mmdmpt.datasets.samplers.SeededIndex`
    (an ``int``) carrying a seed derived from ``(seed, epoch, rank, position
    in the epoch)``; the datasets of mmdmpt seed the randomness of that
    sample's pipeline with it, so augmentation does not depend on the
    data-loader workers and a resumed run augments exactly as an
    uninterrupted one (see ``docs/reliability.md``).

    Labels are read with ``dataset.get_data_info(i)['gt_label']``; the
    pipeline never runs.

    Args:
        dataset (Sized): A dataset with ``get_data_info``.
        batch_size (int): Samples per batch; a multiple of ``num_instances``.
        num_instances (int): K, samples per identity in a batch. Defaults
            to 4.
        with_replacement (bool): Complete identities with fewer than K
            samples by drawing again; when False they are left out (with a
            warning). Defaults to True.
        shuffle (bool): Randomise identities and samples. Defaults to True.
        seed (int, optional): Random seed (of the batches and of the
            per-sample seeds); None draws one and syncs it across ranks
            (``mmengine.dist.sync_random_seed``). The Runner passes its
            ``randomness.seed`` unless ``diff_rank_seed`` is set. Defaults to
            None.
    """

    def __init__(
        self,
        dataset: Sized,
        batch_size: int,
        num_instances: int = 4,
        with_replacement: bool = True,
        shuffle: bool = True,
        seed: Optional[int] = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ConfigError(
                f'IdentitySampler: batch_size must be a positive int, got {batch_size!r}'
            )
        if not isinstance(num_instances, int) or num_instances <= 0:
            raise ConfigError(
                f'IdentitySampler: num_instances must be a positive int, got {num_instances!r}'
            )
        if batch_size % num_instances:
            raise ConfigError(
                f'IdentitySampler: batch_size={batch_size} is not divisible by '
                f'num_instances={num_instances}; a batch holds P identities x K samples'
            )
        rank, world_size = get_dist_info()
        self.rank = rank
        self.world_size = world_size
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_ids_per_batch = batch_size // num_instances
        self.with_replacement = with_replacement
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0

        index_of: Dict[int, List[int]] = {}
        for i in range(len(dataset)):
            label = int(dataset.get_data_info(i)['gt_label'])
            index_of.setdefault(label, []).append(i)
        k = num_instances
        largest = max((len(v) for v in index_of.values()), default=0)
        if not with_replacement:
            short = sorted(pid for pid, idx in index_of.items() if len(idx) < k)
            if short:
                print_log(
                    f'IdentitySampler: {len(short)} identities have fewer than '
                    f'num_instances={k} samples and are not used (with_replacement=False): '
                    f'{short[:20]}{" ..." if len(short) > 20 else ""}',
                    logger='current',
                    level=30,
                )
            for pid in short:
                del index_of[pid]
        self.index_of = {pid: index_of[pid] for pid in sorted(index_of)}
        self.pids = list(self.index_of)
        needed = self.num_ids_per_batch * world_size
        if len(self.pids) < needed:
            if not with_replacement and not self.pids:
                raise ConfigError(
                    f'IdentitySampler: train_dataloader.sampler.num_instances={k} is larger '
                    f"than every identity's sample count (largest: {largest}) and "
                    'with_replacement=False, so no identity is usable; expected '
                    f'num_instances <= {largest} or with_replacement=True'
                )
            raise ConfigError(
                f'IdentitySampler: {len(self.pids)} usable identities (with_replacement='
                f'{with_replacement}, train_dataloader.sampler.num_instances={k}) but a batch '
                f'needs P=batch_size//num_instances={self.num_ids_per_batch} distinct '
                f'identities on each of world_size={world_size} ranks, i.e. {needed}; use a '
                'smaller train_dataloader.batch_size or a larger num_instances'
            )
        if with_replacement:
            chunks = sum(max(1, math.ceil(len(v) / k)) for v in self.index_of.values())
        else:
            chunks = sum(len(v) // k for v in self.index_of.values())
        self.num_batches = max(1, chunks // needed)

    def __len__(self) -> int:
        """Samples this rank yields per epoch."""
        return self.num_batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which changes the order when ``shuffle`` is True.

        Args:
            epoch (int): The epoch.
        """
        self.epoch = epoch

    def _chunks(self, pid: int, rng: Optional[np.random.Generator]) -> List[List[int]]:
        """One pass over an identity's samples, cut into chunks of K."""
        pool = self.index_of[pid]
        k = self.num_instances
        idx = list(pool) if rng is None else [pool[i] for i in rng.permutation(len(pool))]
        chunks = [idx[i : i + k] for i in range(0, len(idx), k)]
        last = chunks[-1]
        if len(last) < k:
            if not self.with_replacement:
                chunks.pop()
                return chunks
            # Complete the last chunk with other samples of the identity
            # (distinct while there are enough), then with repeats.
            extra = k - len(last)
            others = [j for j in pool if j not in last]
            if rng is None:
                src = others or pool
                fill = [src[j % len(src)] for j in range(extra)]
            elif len(others) >= extra:
                fill = [others[j] for j in rng.choice(len(others), extra, replace=False)]
            else:
                fill = others + [pool[j] for j in rng.integers(0, len(pool), extra - len(others))]
            chunks[-1] = last + fill
        return chunks

    def _rank_ids(self, rng: Optional[np.random.Generator]) -> List[int]:
        """The identities this rank owns this epoch."""
        pids = self.pids
        if rng is not None:
            pids = [pids[i] for i in rng.permutation(len(pids))]
        return pids[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        """Yield this rank's indices for the epoch, each with its sample seed."""
        seeds = derive_seeds(len(self), SAMPLE_TAG, self.seed, self.epoch, self.rank)
        for position, index in enumerate(self._indices()):
            yield SeededIndex(index, seeds[position])

    def _indices(self) -> Iterator[int]:
        """Yield the indices of this rank's batches for the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        pids = self._rank_ids(rng)
        if rng is not None:
            # A rank-specific stream for the batches (the id deal above used
            # the shared stream, identical on every rank).
            rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        chunks = {pid: self._chunks(pid, rng) for pid in pids}
        p = self.num_ids_per_batch
        cursor = 0  # for shuffle=False: round-robin over identities
        for _ in range(self.num_batches):
            if rng is not None:
                if sum(1 for pid in pids if chunks[pid]) < p:
                    for pid in pids:
                        if not chunks[pid]:
                            chunks[pid] = self._chunks(pid, rng)
                left = np.array([len(chunks[pid]) for pid in pids], dtype=np.float64)
                picked = rng.choice(len(pids), size=p, replace=False, p=left / left.sum())
                batch_ids = [pids[i] for i in picked]
            else:
                batch_ids = [pids[(cursor + j) % len(pids)] for j in range(p)]
                cursor = (cursor + p) % len(pids)
                for pid in batch_ids:
                    if not chunks[pid]:
                        chunks[pid] = self._chunks(pid, None)
            for pid in batch_ids:
                yield from chunks[pid].pop(0)
