import numpy as np
import pytest
import torch

from mmdmpt.apis import GallerySearcher, search_gallery
from mmdmpt.evaluation.functional import compute_distance


def _brute(q, g, metric, removed=None):
    dist = compute_distance(q, g, metric).numpy()
    out = []
    for i in range(len(q)):
        order = np.argsort(dist[i], kind='stable')
        if removed is not None:
            order = order[~removed[i][order]]
        out.append((order, dist[i][order]))
    return out


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
def test_search_gallery_matches_brute_force(metric):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(7, 5, generator=gen)
    g = torch.randn(20, 5, generator=gen)
    g[3] = g[11]  # an exact tie keeps gallery order
    meta = {'pid': list(range(100, 120)), 'name': [f'g{i}' for i in range(20)]}
    res = search_gallery(q, g, k=6, metric=metric, gallery_meta=meta, chunk_size=3)
    assert res.indices.shape == res.distances.shape == (7, 6)
    for i, (order, dist) in enumerate(_brute(q, g, metric)):
        assert res.indices[i].tolist() == order[:6].tolist()
        np.testing.assert_allclose(res.distances[i].numpy(), dist[:6], rtol=0, atol=1e-12)
        assert [m['pid'] for m in res.meta[i]] == [100 + j for j in order[:6]]
    # k larger than the gallery is cut; NumPy input works.
    assert search_gallery(q.numpy(), g.numpy(), k=50).indices.shape == (7, 20)


@pytest.mark.parametrize('scenes', [False, True])
def test_removal_rule_matches_brute_force(scenes):
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(9, 4)), rng.normal(size=(30, 4))
    q_pids, g_pids = rng.integers(0, 3, 9), rng.integers(0, 3, 30)
    q_cams, g_cams = rng.integers(0, 2, 9), rng.integers(0, 2, 30)
    q_scn, g_scn = rng.integers(0, 2, 9), rng.integers(0, 2, 30)
    searcher = GallerySearcher(
        g,
        gallery_meta=[{'i': i} for i in range(30)],
        gallery_pids=g_pids,
        gallery_camids=g_cams,
        gallery_sceneids=g_scn if scenes else None,
    )
    res = searcher.search(
        q, 8, query_pids=q_pids, query_camids=q_cams, query_sceneids=q_scn if scenes else None
    )
    qg, gg = (q_scn, g_scn) if scenes else (q_cams, g_cams)
    removed = (q_pids[:, None] == g_pids[None]) & (qg[:, None] == gg[None])
    assert removed.any()
    for i, (order, _) in enumerate(_brute(q, g, 'cosine', removed)):
        assert res.indices[i].tolist() == order[:8].tolist()
        assert [m['i'] for m in res.meta[i]] == order[:8].tolist()


def test_padding_when_the_rule_leaves_too_few():
    g = np.eye(3)
    searcher = GallerySearcher(g, gallery_pids=[1, 1, 2], gallery_camids=[0, 0, 0])
    res = searcher.search(np.eye(3)[:1], 3, query_pids=[1], query_camids=[0])
    assert res.indices.tolist() == [[2, -1, -1]]
    assert res.distances[0, 1:].isinf().all() and res.meta is None


def test_errors():
    g = np.ones((3, 2))
    with pytest.raises(ValueError, match='k must be a positive int'):
        search_gallery(g, g, k=0)
    with pytest.raises(ValueError, match='gallery identities'):
        GallerySearcher(g).search(g, 2, query_pids=[0, 0, 0], query_camids=[0, 0, 0])
    with pytest.raises(ValueError, match='query_sceneids'):
        GallerySearcher(g, gallery_pids=[0] * 3, gallery_sceneids=[0] * 3).search(
            g, 2, query_pids=[0] * 3
        )
    with pytest.raises(ValueError, match='gallery_meta'):
        GallerySearcher(g, gallery_meta={'pid': [1, 2]})
    with pytest.raises(ValueError, match='non-empty'):
        GallerySearcher(np.ones((0, 2)))
