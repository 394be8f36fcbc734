from collections import Counter

import pytest

import mmdmpt.datasets.samplers.identity_sampler as module
from mmdmpt.datasets import IdentitySampler
from mmdmpt.registry import DATA_SAMPLERS


class LabelsOnly:
    """A dataset exposing labels through get_data_info; running it fails."""

    def __init__(self, counts):
        self.labels = [pid for pid, n in counts.items() for _ in range(n)]

    def __len__(self):
        return len(self.labels)

    def get_data_info(self, i):
        return dict(gt_label=self.labels[i])

    def __getitem__(self, i):
        raise AssertionError('the sampler must not run the pipeline')


COUNTS = {pid: 3 + (pid % 7) for pid in range(100, 124)}  # 24 ids, 3..9 samples


def _batches(sampler):
    idx = list(sampler)
    assert len(idx) == len(sampler)
    bs = sampler.batch_size
    assert len(idx) % bs == 0
    return [idx[i : i + bs] for i in range(0, len(idx), bs)]


def _check_pk(sampler, dataset, p, k):
    batches = _batches(sampler)
    for batch in batches:
        per_id = Counter(dataset.labels[i] for i in batch)
        assert len(per_id) == p and set(per_id.values()) == {k}
    return batches


def _rank(monkeypatch, rank, world):
    monkeypatch.setattr(module, 'get_dist_info', lambda: (rank, world))


def test_pk_single_rank():
    ds = LabelsOnly(COUNTS)
    sampler = DATA_SAMPLERS.build(
        dict(type='IdentitySampler', dataset=ds, batch_size=16, num_instances=4, seed=0)
    )
    batches = _check_pk(sampler, ds, 4, 4)
    total_chunks = sum(-(-n // 4) for n in COUNTS.values())
    assert len(batches) == total_chunks // 4
    # ids with fewer than K samples (100: 3 samples) are used, drawn with replacement
    used = set()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        used |= {ds.labels[i] for b in _batches(sampler) for i in b}
    assert used == set(COUNTS)
    # ids with at least K samples never repeat a sample within a batch
    for batch in _batches(sampler):
        for pid in {ds.labels[i] for i in batch}:
            members = [i for i in batch if ds.labels[i] == pid]
            if COUNTS[pid] >= 4:
                assert len(set(members)) == 4
    small = LabelsOnly({1: 1, 2: 2, 3: 5, 4: 4})
    batches = _check_pk(IdentitySampler(small, batch_size=8, num_instances=4, seed=0), small, 2, 4)
    used = {small.labels[i] for b in batches for i in b}
    assert used <= {1, 2, 3, 4}


def test_determinism_and_epochs():
    ds = LabelsOnly(COUNTS)
    a = IdentitySampler(ds, batch_size=16, num_instances=4, seed=5)
    b = IdentitySampler(ds, batch_size=16, num_instances=4, seed=5)
    assert list(a) == list(b) == list(a)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and len(list(a)) == len(first)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(IdentitySampler(ds, batch_size=16, num_instances=4, seed=6)) != first


def test_no_shuffle_is_fixed():
    ds = LabelsOnly(COUNTS)
    s = IdentitySampler(ds, batch_size=8, num_instances=2, shuffle=False, seed=0)
    first = _check_pk(s, ds, 4, 2)
    s.set_epoch(3)
    assert _batches(s) == first


def test_seed_from_sync_random_seed(monkeypatch):
    monkeypatch.setattr(module, 'sync_random_seed', lambda: 1234)
    assert IdentitySampler(LabelsOnly(COUNTS), batch_size=8).seed == 1234


def test_without_replacement(monkeypatch):
    import mmdmpt.datasets.samplers.identity_sampler as m

    warnings = []
    monkeypatch.setattr(m, 'print_log', lambda msg, **kw: warnings.append(msg))
    counts = {1: 2, 2: 4, 3: 5, 4: 8, 5: 3}
    ds = LabelsOnly(counts)
    s = IdentitySampler(ds, batch_size=8, num_instances=4, with_replacement=False, seed=0)
    assert warnings and 'fewer than num_instances=4' in warnings[0] and '[1, 5]' in warnings[0]
    for batch in _check_pk(s, ds, 2, 4):
        assert len(set(batch)) == len(batch)  # never drawn twice
        assert {ds.labels[i] for i in batch} <= {2, 3, 4}
    with pytest.raises(
        ValueError, match=r'2 usable identities .* needs P=batch_size//num_instances=3'
    ):
        IdentitySampler(
            LabelsOnly({1: 4, 2: 5, 3: 2}), batch_size=12, num_instances=4, with_replacement=False
        )


def test_bad_sizes():
    ds = LabelsOnly(COUNTS)
    with pytest.raises(ValueError, match='batch_size=10 is not divisible by num_instances=4'):
        IdentitySampler(ds, batch_size=10, num_instances=4)
    with pytest.raises(ValueError, match='num_instances must be a positive int'):
        IdentitySampler(ds, batch_size=8, num_instances=0)


def test_two_ranks(monkeypatch):
    ds = LabelsOnly(COUNTS)
    samplers = []
    for rank in (0, 1):
        _rank(monkeypatch, rank, 2)
        samplers.append(IdentitySampler(ds, batch_size=16, num_instances=4, seed=3))
    assert len(samplers[0]) == len(samplers[1]) > 0
    for epoch in (0, 1):
        ids = []
        for s in samplers:
            s.set_epoch(epoch)
            batches = _check_pk(s, ds, 4, 4)
            ids.append({ds.labels[i] for b in batches for i in b})
        assert ids[0].isdisjoint(ids[1])
        assert len(ids[0] | ids[1]) <= len(COUNTS)
    total = sum(-(-n // 4) for n in COUNTS.values())
    assert len(samplers[0]) == total // (4 * 2) * 16
    # rank 0 of 2 differs from the single-rank plan
    _rank(monkeypatch, 0, 1)
    assert list(IdentitySampler(ds, batch_size=16, num_instances=4, seed=3)) != list(samplers[0])
    # each rank needs P ids
    _rank(monkeypatch, 0, 2)
    with pytest.raises(ValueError, match='on each of world_size=2 ranks, i.e. 16'):
        IdentitySampler(LabelsOnly({i: 4 for i in range(10)}), batch_size=32, num_instances=4)
