"""Guarantee 4 (part): fuzzed file names and rank evaluation raise documented errors only."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdmpt.datasets import MSVR310, WMVeID863
from mmdmpt.evaluation.functional.rank import evaluate_rank

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NAMES = st.one_of(
    st.text(max_size=40),
    # near-misses of the documented patterns
    st.from_regex(r'\A\d{0,5}_s\d{0,4}_v\d{0,3}(_[\w\-]{0,5})?(\.jpg|\.png|)\Z'),
    st.from_regex(r'\A\d{0,4}(_v\d{0,2})?(_n\d{0,2})?(_\w{0,4})?(\.jpg)?\Z'),
)


def _bare(cls):
    """A dataset instance with no files behind it, to call its name parser."""
    return object.__new__(cls)


@FUZZ
@given(name=NAMES, pid=st.integers(0, 9999))
def test_msvr310_name_parser(name, pid):
    try:
        info = MSVR310._parse(_bare(MSVR310), name, f'/root/vis/{pid:04d}/{name}', pid)
    except ValueError as exc:
        assert 'MSVR310: cannot parse image name' in str(exc)
    else:
        assert set(info) == {'camid', 'sceneid'}
        assert isinstance(info['camid'], int) and isinstance(info['sceneid'], int)


@FUZZ
@given(name=NAMES, pid=st.integers(0, 9999))
def test_wmveid863_name_parser(name, pid):
    try:
        info = WMVeID863._parse(_bare(WMVeID863), name, f'/root/vis/{pid:04d}/{name}', pid)
    except ValueError as exc:
        assert 'WMVeID863: cannot parse image name' in str(exc)
    else:
        assert set(info) == {'camid', 'night'} and 0 <= info['night'] <= 9


def _reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Brute force: the standard Market-1501 protocol, one query at a time."""
    aps, inps, cmc = [], [], np.zeros(max_rank)
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind='stable')
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order] == q_pids[i])[keep]
        if not hits.any():
            continue
        pos = np.flatnonzero(hits)
        cmc[pos[0] :] += 1 if pos[0] < max_rank else 0
        aps.append(np.mean([(k + 1) / (p + 1) for k, p in enumerate(pos)]))
        inps.append(len(pos) / (pos[-1] + 1))
    return aps, inps, cmc


@FUZZ
@given(
    seed=st.integers(0, 2**31 - 1),
    num_q=st.integers(1, 6),
    num_g=st.integers(1, 12),
    num_ids=st.integers(1, 4),
    num_cams=st.integers(1, 3),
    max_rank=st.integers(1, 15),
)
def test_evaluate_rank_matches_brute_force(seed, num_q, num_g, num_ids, num_cams, max_rank):
    rng = np.random.default_rng(seed)
    dist = rng.random((num_q, num_g))  # continuous: no ties
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    aps, inps, cmc = _reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    if not aps:
        with pytest.raises(ValueError):
            evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
        return
    out = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    assert out['num_valid_queries'] == len(aps)
    assert out['num_invalid_queries'] == num_q - len(aps)
    np.testing.assert_allclose(out['mAP'], np.mean(aps), atol=1e-9)
    np.testing.assert_allclose(out['mINP'], np.mean(inps), atol=1e-9)
    np.testing.assert_allclose(out['cmc'], cmc / len(aps), atol=1e-9)


@FUZZ
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(0, 5), st.integers(0, 7)),
    bad=st.sampled_from([np.nan, np.inf, -np.inf, None]),
    wrong_len=st.booleans(),
    max_rank=st.integers(-2, 10),
)
def test_evaluate_rank_adversarial_inputs(seed, shape, bad, wrong_len, max_rank):
    rng = np.random.default_rng(seed)
    dist = rng.random(shape)
    if bad is not None and dist.size:
        dist.flat[rng.integers(0, dist.size)] = bad
    num_q, num_g = shape
    q_pids = rng.integers(0, 3, num_q + (1 if wrong_len else 0))
    g_pids = rng.integers(0, 3, num_g)
    q_cams, g_cams = rng.integers(0, 2, len(q_pids)), rng.integers(0, 2, num_g)
    try:
        out = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    except ValueError:
        return
    assert not wrong_len and max_rank >= 1 and bad is not np.nan
    assert 0.0 <= out['mAP'] <= 1.0 and 0.0 <= out['mINP'] <= 1.0
    assert out['cmc'].shape == (max_rank,) and np.all(np.diff(out['cmc']) >= 0)


def test_evaluate_rank_all_queries_removed():
    # every true match shares the query's camera: all queries are invalid
    with pytest.raises(ValueError):
        evaluate_rank(np.zeros((2, 2)), [0, 1], [0, 1], [0, 0], [0, 0])
