"""GallerySearcher backends: exact torch (prepared, in blocks) and FAISS, with the removal rule."""

import builtins

import numpy as np
import pytest
import torch

from mmdmpt.evaluation.functional import GallerySearcher, compute_distance, stable_topk
from mmdmpt.utils.errors import ConfigError


def _brute(q, g, metric, removed, k):
    """Stable full sort of the float64 distances, removed samples dropped, padded."""
    dist = compute_distance(q, g, metric).numpy()
    idx = np.full((len(q), k), -1)
    out = np.full((len(q), k), np.inf)
    for i in range(len(q)):
        order = np.argsort(dist[i], kind='stable')
        if removed is not None:
            order = order[~removed[i][order]]
        idx[i, : min(k, order.size)] = order[:k]
        out[i, : min(k, order.size)] = dist[i][order[:k]]
    return idx, out


@pytest.fixture(scope='module')
def problem():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(300, 12)).astype(np.float32)
    g[rng.integers(0, 300, 60)] = g[rng.integers(0, 300, 60)]  # duplicated rows tie exactly
    q = rng.normal(size=(23, 12)).astype(np.float32)
    ids = dict(
        g_pids=rng.integers(0, 6, 300),
        g_cams=rng.integers(0, 3, 300),
        g_scenes=rng.integers(0, 3, 300),
        q_pids=rng.integers(0, 6, 23),
        q_cams=rng.integers(0, 3, 23),
        q_scenes=rng.integers(0, 3, 23),
    )
    return q, g, ids


SEARCHERS = {
    'torch': dict(),
    'torch_blocks': dict(float64_bytes=0, chunk_size=5),
    'faiss_flat': dict(backend='faiss'),
    'faiss_ivf_all_lists': dict(
        backend='faiss', index='ivf', index_options=dict(nlist=4, nprobe=4)
    ),
}


@pytest.mark.parametrize('name', list(SEARCHERS))
@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
@pytest.mark.parametrize('rule', ['camera', 'scene', 'none'])
def test_exact_backends_equal_the_brute_force(problem, name, metric, rule):
    # (IVF probing every list is exact too)
    q, g, ids = problem
    groups = dict(camera=('q_cams', 'g_cams'), scene=('q_scenes', 'g_scenes'))
    removed = None
    if rule != 'none':
        qg, gg = (ids[k] for k in groups[rule])
        removed = (ids['q_pids'][:, None] == ids['g_pids'][None]) & (qg[:, None] == gg[None])
        assert removed.any()
    searcher = GallerySearcher(
        g,
        metric,
        gallery_pids=ids['g_pids'],
        gallery_camids=ids['g_cams'],
        gallery_sceneids=ids['g_scenes'],
        removal_rule=rule,
        **SEARCHERS[name],
    )
    res = searcher.search(
        q, 15, query_pids=ids['q_pids'], query_camids=ids['q_cams'], query_sceneids=ids['q_scenes']
    )
    idx, dist = _brute(q, g, metric, removed, 15)
    assert np.array_equal(res.indices.numpy(), idx)
    np.testing.assert_allclose(res.distances.numpy(), dist, rtol=0, atol=1e-12)


def test_faiss_flat_refetches_until_proven(problem, monkeypatch):
    # near-ties far down the float32 order: the bound forces more candidates
    q, g, _ = problem
    g = np.repeat(g[:1], 200, axis=0) + np.random.default_rng(1).normal(size=(200, 12)) * 1e-7
    searcher = GallerySearcher(g.astype(np.float64), backend='faiss')
    calls = []
    search = searcher._index.search
    monkeypatch.setattr(searcher._index, 'search', lambda x, k: calls.append(k) or search(x, k))
    res = searcher.search(q[:3], 5)
    idx, _ = _brute(q[:3], g, 'cosine', None, 5)
    assert np.array_equal(res.indices.numpy(), idx)
    assert len(calls) > 1 and calls[-1] > calls[0]


def test_approximate_indexes_find_clustered_neighbours():
    # 40 tight clusters: an approximate index finds each query's cluster
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(40, 16))
    g = (centres[np.repeat(np.arange(40), 25)] + 0.05 * rng.normal(size=(1000, 16))).astype('f4')
    q = (centres + 0.05 * rng.normal(size=(40, 16))).astype('f4')
    exact = GallerySearcher(g).search(q, 10).indices.numpy()
    for index, options in (('ivf', dict(nlist=16, nprobe=2)), ('hnsw', dict(m=8))):
        found = GallerySearcher(g, backend='faiss', index=index, index_options=options)
        approx = found.search(q, 10).indices.numpy()
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
        assert recall >= 0.95, (index, recall)


def test_stable_topk_equals_a_stable_sort():
    rng = np.random.default_rng(3)
    dist = torch.from_numpy(rng.integers(0, 4, (30, 50)).astype(np.float64))  # many ties
    for k in (1, 7, 50):
        values, order = stable_topk(dist, k)
        ref_values, ref_order = torch.sort(dist, dim=1, stable=True)
        assert torch.equal(order, ref_order[:, :k]) and torch.equal(values, ref_values[:, :k])


def test_backend_errors(monkeypatch):
    g = np.eye(4)
    with pytest.raises(ConfigError, match="backend must be one of \\('torch', 'faiss'\\)"):
        GallerySearcher(g, backend='annoy')
    with pytest.raises(ConfigError, match="index='hnsw' is a FAISS index; use backend='faiss'"):
        GallerySearcher(g, index='hnsw')
    with pytest.raises(ConfigError, match=r"unknown index_options \['nprobe'\] for index='hnsw'"):
        GallerySearcher(g, backend='faiss', index='hnsw', index_options=dict(nprobe=3))
    with pytest.raises(ConfigError, match='removal_rule must be one of'):
        GallerySearcher(g, removal_rule='id')
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == 'faiss':
            raise ImportError('No module named faiss')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_faiss)
    with pytest.raises(ConfigError, match=r'needs the faiss-cpu package.*requirements/faiss.txt'):
        GallerySearcher(g, backend='faiss')
