"""ReIDMetric end to end: registry, process, compute_metrics, collection over ranks.

Expected values come from :func:`_reference`, a plain per-query NumPy
implementation of the protocol written here; it does not call mmdmpt's
evaluation functions (re-ranking excepted, which only the re-ranking test
feeds with distances computed here).
"""

import logging

import mmengine.dataset.sampler as sampler_module
import mmengine.dist.dist as dist_module
import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler
from mmengine.logging import MMLogger
from mmpretrain.structures import DataSample

import mmdmpt.evaluation  # noqa: F401  (registers ReIDMetric)
from mmdmpt.evaluation.functional import re_ranking
from mmdmpt.evaluation.metrics.reid_metric import ReIDMetric
from mmdmpt.registry import METRICS


def _samples(seed=0, num=60, dim=16, scenes=False, as_data_sample=False, ties=False):
    """Samples as the model would return them: 1/4 queries, the rest gallery.

    With ``ties``, some gallery samples get exactly the feature of another
    gallery sample of a different identity, so that the order of equal
    distances (gallery order) changes the metrics.
    """
    rng = np.random.default_rng(seed)
    pids = rng.integers(0, 8, num)
    centers = rng.normal(size=(8, dim))
    feats = (centers[pids] + 0.8 * rng.normal(size=(num, dim))).astype(np.float32)
    if ties:
        for src, dst in ((1, 2), (5, 3), (9, 11), (13, 10), (17, 18)):  # none is i % 4 == 0
            feats[dst] = feats[src]
            pids[dst] = (pids[src] + 1) % 8
    out = []
    for i in range(num):
        meta = dict(camid=int(rng.integers(0, 3)), is_query=bool(i % 4 == 0), sample_idx=i)
        if scenes:
            meta['sceneid'] = int(rng.integers(0, 3))
        if as_data_sample:
            sample = DataSample().set_gt_label(int(pids[i]))
            sample.set_metainfo(meta)
            sample.pred_feature = torch.from_numpy(feats[i].copy())
        else:
            sample = dict(
                meta, pred_feature=torch.from_numpy(feats[i].copy())
            )  # as after to_dict(): gt_label a (1,) tensor
            sample['gt_label'] = torch.tensor([pids[i]])
        out.append(sample)
    return out


def _field(sample, key):
    return sample.get(key)  # dicts and data samples; None when absent


def _split(samples):
    """Query and gallery lists in ``sample_idx`` order, one entry per sample."""
    unique = {}
    for s in samples:
        unique.setdefault(int(_field(s, 'sample_idx')), s)
    ordered = [unique[k] for k in sorted(unique)]
    query = [s for s in ordered if _field(s, 'is_query')]
    gallery = [s for s in ordered if not _field(s, 'is_query')]
    return query, gallery


def _ids(part, key):
    return [int(np.asarray(_field(s, key)).reshape(-1)[0]) for s in part]


def _unit(x):
    return x / np.linalg.norm(x)


def _distance(q, g, metric):
    """One query-gallery distance in float64, pair by pair."""
    if metric == 'cosine':
        return 1.0 - float(np.dot(_unit(q), _unit(g)))
    return float(np.sqrt(np.sum((q - g) ** 2)))


def _reference(
    samples, metric='cosine', feat_norm=True, ranks=(1, 5, 10), distmat=None, removal_rule=None
):
    """The protocol, one query at a time, in plain NumPy.

    For each query: distances to every gallery sample, a stable argsort
    (equal distances keep gallery order), removal of the gallery samples with
    the query's identity and camera -- or identity and scene when every
    sample has a scene id, or as ``removal_rule`` says (``'camera'``,
    ``'scene'``, or ``'none'``: nothing removed) --, then with the true
    matches at 1-based positions
    ``p_1 < ... < p_n`` of the kept ranking: ``AP = mean_i(i / p_i)``,
    ``INP = n / p_n``, ``CMC@k = [p_1 <= k]``. Queries with ``n = 0`` are
    skipped. Results in percent.
    """
    query, gallery = _split(samples)
    feats = lambda part: [  # noqa: E731
        np.asarray(_field(s, 'pred_feature'), dtype=np.float64) for s in part
    ]
    q_feats, g_feats = feats(query), feats(gallery)
    if feat_norm:
        q_feats, g_feats = [_unit(f) for f in q_feats], [_unit(f) for f in g_feats]
    q_pids, g_pids = _ids(query, 'gt_label'), _ids(gallery, 'gt_label')
    use_scenes = all(_field(s, 'sceneid') is not None for s in query + gallery)
    if removal_rule is None:
        removal_rule = 'scene' if use_scenes else 'camera'
    group = 'sceneid' if removal_rule == 'scene' else 'camid'
    q_groups, g_groups = _ids(query, group), _ids(gallery, group)
    aps, inps, cmc = [], [], {k: [] for k in ranks}
    for i, q in enumerate(q_feats):
        if distmat is None:
            dist = np.array([_distance(q, g, metric) for g in g_feats])
        else:
            dist = np.asarray(distmat[i], dtype=np.float64)
        order = np.argsort(dist, kind='stable')
        kept = [
            j
            for j in order
            if removal_rule == 'none' or not (g_pids[j] == q_pids[i] and g_groups[j] == q_groups[i])
        ]
        positions = [r + 1 for r, j in enumerate(kept) if g_pids[j] == q_pids[i]]
        if not positions:
            continue
        aps.append(np.mean([n / p for n, p in enumerate(positions, start=1)]))
        inps.append(len(positions) / positions[-1])
        for k in ranks:
            cmc[k].append(float(positions[0] <= k))
    out = {'mAP': 100 * np.mean(aps), 'mINP': 100 * np.mean(inps)}
    out.update({f'Rank-{k}': 100 * np.mean(cmc[k]) for k in ranks})
    return out


def _assert_metrics(out, expected, prefix=''):
    assert list(out) == [prefix + k for k in expected]
    for key, value in expected.items():
        assert out[prefix + key] == pytest.approx(value, abs=1e-9), key


def _run(metric, samples, batch=7):
    for start in range(0, len(samples), batch):
        metric.process({}, samples[start : start + batch])
    return metric.compute_metrics(metric.results)


def test_reference_implementation_by_hand():
    # 2 queries, 5 gallery samples on a line (euclidean, raw features).
    # q0 (id 0, cam 0) at 0: gallery by distance g0 (0.1, id 0, cam 0: removed),
    #   g1 (0.2, id 1), g2 (0.3, id 0, cam 1), g3 (0.4, id 2), g4 (0.5, id 0, cam 2)
    #   kept ranking g1 g2 g3 g4, matches at 2, 4: AP = (1/2 + 2/4) / 2 = 0.5,
    #   INP = 2/4, first match at 2.
    # q1 (id 2, cam 0) at 0.42: g3 first (0.02, id 2, cam 1): AP = INP = 1.
    pos = [0.1, 0.2, 0.3, 0.4, 0.5]
    g = [(0, 0), (1, 1), (0, 1), (2, 1), (0, 2)]  # (id, cam)
    samples = [
        dict(pred_feature=torch.tensor([0.0]), gt_label=0, camid=0, is_query=True, sample_idx=0),
        dict(pred_feature=torch.tensor([0.42]), gt_label=2, camid=0, is_query=True, sample_idx=1),
    ] + [
        dict(pred_feature=torch.tensor([x]), gt_label=i, camid=c, is_query=False, sample_idx=2 + j)
        for j, (x, (i, c)) in enumerate(zip(pos, g))
    ]
    expected = {'mAP': 75.0, 'mINP': 75.0, 'Rank-1': 50.0, 'Rank-5': 100.0, 'Rank-10': 100.0}
    assert _reference(samples, metric='euclidean', feat_norm=False) == pytest.approx(expected)
    metric = METRICS.build(dict(type='ReIDMetric', metric='euclidean', feat_norm=False))
    _assert_metrics(_run(metric, samples), expected)


@pytest.mark.parametrize('as_data_sample', [False, True])
def test_end_to_end_through_registry(as_data_sample):
    metric = METRICS.build(dict(type='ReIDMetric'))
    assert metric.prefix == 'reid'
    samples = _samples(as_data_sample=as_data_sample)
    _assert_metrics(_run(metric, samples), _reference(samples))


def test_equal_distances_keep_gallery_order():
    samples = _samples(seed=8, ties=True)
    out = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    _assert_metrics(out, _reference(samples))
    # the ties matter: the same data with the copies' order reversed differs
    swapped = [dict(s) for s in samples]
    for a, b in ((1, 2), (5, 3), (9, 11), (13, 10), (17, 18)):
        swapped[a]['sample_idx'], swapped[b]['sample_idx'] = b, a
    assert _reference(swapped)['mAP'] != pytest.approx(_reference(samples)['mAP'], abs=1e-6)
    _assert_metrics(_run(METRICS.build(dict(type='ReIDMetric')), swapped), _reference(swapped))


def test_evaluate_adds_prefix_and_logs_counts():
    metric = METRICS.build(dict(type='ReIDMetric', ranks=(1, 3), max_rank=3))
    samples = _samples()
    metric.process({}, samples)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        out = metric.evaluate(size=len(samples))
    finally:
        logger.removeHandler(handler)
    _assert_metrics(out, _reference(samples, ranks=(1, 3)), prefix='reid/')
    messages = ' '.join(r.getMessage() for r in records)
    assert '15 queries, 45 gallery samples' in messages and 'queries skipped' in messages


def test_scene_rule_chosen_from_data():
    samples = _samples(seed=1, scenes=True)
    out = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    _assert_metrics(out, _reference(samples))
    camera_rule = [{k: v for k, v in s.items() if k != 'sceneid'} for s in samples]
    assert out['mAP'] != pytest.approx(_reference(camera_rule)['mAP'], abs=1e-6)  # rule matters
    # one sample without a scene: back to the camera rule
    samples[5].pop('sceneid')
    out = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    _assert_metrics(out, _reference(camera_rule))


@pytest.mark.parametrize('rule', ['none', 'camera', 'scene'])
def test_removal_rule_stated_by_the_dataset(rule):
    # samples with scenes: without a stated rule the scene rule applies
    samples = _samples(seed=9, scenes=True)
    metric = METRICS.build(dict(type='ReIDMetric'))
    metric.dataset_meta = dict(removal_rule=rule, modalities=('rgb',))
    out = _run(metric, samples)
    _assert_metrics(out, _reference(samples, removal_rule=rule))
    if rule != 'scene':  # the stated rule matters
        assert out['mAP'] != pytest.approx(_reference(samples)['mAP'], abs=1e-6)


def test_no_removal_counts_the_query_itself_in_the_gallery():
    # data without cameras: a sample both query and gallery is its own rank 1
    samples = _samples(seed=10)
    for s in samples[:15]:
        twin = dict(s, is_query=False, sample_idx=s['sample_idx'] + 100)
        samples.append(twin)
    metric = METRICS.build(dict(type='ReIDMetric'))
    metric.dataset_meta = dict(removal_rule='none')
    out = _run(metric, samples)
    _assert_metrics(out, _reference(samples, removal_rule='none'))
    assert out['Rank-1'] == pytest.approx(100.0)


def test_stated_rule_errors():
    samples = _samples(seed=11)
    metric = METRICS.build(dict(type='ReIDMetric'))
    metric.dataset_meta = dict(removal_rule='cams')
    with pytest.raises(ValueError, match="removal_rule is 'cams'; expected one of"):
        _run(metric, samples)
    metric = METRICS.build(dict(type='ReIDMetric'))
    metric.dataset_meta = dict(removal_rule='scene')
    with pytest.raises(ValueError, match="rule is 'scene' but only 0 of 60 test samples carry"):
        _run(metric, samples)


def test_duplicates_removed_and_order_fixed_by_sample_idx():
    samples = _samples(seed=2)
    single = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    _assert_metrics(single, _reference(samples))
    shuffled = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))]
    shuffled += samples[:5]  # padded repeats
    again = _run(METRICS.build(dict(type='ReIDMetric')), shuffled)
    assert again == pytest.approx(single, abs=1e-9)


def _evaluate_on_ranks(
    monkeypatch, tmp_path, samples, world_size, shuffle, round_up, collect_device, size
):
    """``ReIDMetric.evaluate`` of rank 0 after ``world_size`` ranks processed their part.

    Each rank's indices come from MMEngine's ``DefaultSampler`` (which pads
    with repeats when ``round_up``), its metric processes them in batches of
    3, and rank 0's ``evaluate(size)`` collects through MMEngine's own
    ``collect_results``: with ``'cpu'`` every rank pickles its results into
    ``collect_dir`` and rank 0 reads the parts back, interleaves them
    (rank0[0], rank1[0], ..., rank0[1], ...) and keeps the first ``size``;
    with ``'gpu'`` the parts come from ``all_gather_object``, same order.
    Only the rank/world size (and the gather for ``'gpu'``) are patched.

    Returns:
        tuple: (metrics, the results list ``compute_metrics`` received).
    """
    collect_dir = str(tmp_path / 'collect') if collect_device == 'cpu' else None
    metrics = []
    for rank in range(world_size):
        monkeypatch.setattr(sampler_module, 'get_dist_info', lambda r=rank: (r, world_size))
        indices = list(DefaultSampler(samples, shuffle=shuffle, seed=3, round_up=round_up))
        metric = ReIDMetric(collect_device=collect_device, collect_dir=collect_dir)
        for start in range(0, len(indices), 3):
            metric.process({}, [samples[i] for i in indices[start : start + 3]])
        metrics.append(metric)
    if collect_device == 'cpu':
        for rank in range(1, world_size):
            monkeypatch.setattr(dist_module, 'get_dist_info', lambda r=rank: (r, world_size))
            part = dist_module.collect_results(metrics[rank].results, size, 'cpu', collect_dir)
            assert part is None  # only rank 0 gets the results
    else:
        parts = [m.results for m in metrics]
        monkeypatch.setattr(dist_module, 'all_gather_object', lambda data, group=None: parts)
    monkeypatch.setattr(dist_module, 'get_dist_info', lambda: (0, world_size))
    received = []
    compute = metrics[0].compute_metrics
    monkeypatch.setattr(
        metrics[0], 'compute_metrics', lambda results: received.extend(results) or compute(results)
    )
    return metrics[0].evaluate(size), received


@pytest.mark.parametrize(
    'world_size,shuffle,round_up,collect_device',
    [
        (2, False, True, 'cpu'),
        (3, True, True, 'cpu'),
        (2, True, False, 'cpu'),
        (3, True, True, 'gpu'),
    ],
)
def test_mmengine_collection_equals_single_process(
    monkeypatch, tmp_path, world_size, shuffle, round_up, collect_device
):
    samples = _samples(seed=3, num=61, scenes=True)
    expected = _reference(samples)
    single = METRICS.build(dict(type='ReIDMetric'))
    single.process({}, samples)
    _assert_metrics(single.evaluate(len(samples)), expected, prefix='reid/')
    out, received = _evaluate_on_ranks(
        monkeypatch, tmp_path, samples, world_size, shuffle, round_up, collect_device, len(samples)
    )
    # MMEngine's interleave + cut gives back every sample once, padding dropped
    assert sorted(r['sample_idx'] for r in received) == list(range(len(samples)))
    if not shuffle:
        assert [r['sample_idx'] for r in received] == list(range(len(samples)))
    _assert_metrics(out, expected, prefix='reid/')


@pytest.mark.parametrize('collect_device', ['cpu', 'gpu'])
def test_padding_repeats_are_removed(monkeypatch, tmp_path, collect_device):
    # 61 samples on 4 ranks: the sampler pads to 64 with repeats of samples
    # 0..2. Collected with size=64 (the padded length), the repeats reach
    # compute_metrics, which must drop them.
    samples = _samples(seed=4, num=61)
    expected = _reference(samples)
    out, received = _evaluate_on_ranks(
        monkeypatch, tmp_path, samples, 4, False, True, collect_device, 64
    )
    idx = [r['sample_idx'] for r in received]
    assert len(idx) == 64 and sorted(set(idx)) == list(range(61))
    assert [i for i in set(idx) if idx.count(i) > 1] == [0, 1, 2]
    _assert_metrics(out, expected, prefix='reid/')
    # Without the de-duplication the repeats would change the numbers.
    import mmdmpt.structures.reid_features as records

    monkeypatch.setattr(records, 'deduplicate_records', lambda rows: list(rows))
    with_repeats = METRICS.build(dict(type='ReIDMetric')).compute_metrics(received)
    assert with_repeats['mAP'] != pytest.approx(expected['mAP'], abs=1e-6)


def test_euclidean_on_normalised_features_ranks_like_cosine():
    samples = _samples(seed=4)
    cos = _run(METRICS.build(dict(type='ReIDMetric', metric='cosine')), samples)
    euc = _run(METRICS.build(dict(type='ReIDMetric', metric='euclidean')), samples)
    _assert_metrics(cos, _reference(samples, metric='cosine'))
    _assert_metrics(euc, _reference(samples, metric='euclidean'))
    assert euc == pytest.approx(cos, abs=1e-9)
    raw = _run(METRICS.build(dict(type='ReIDMetric', metric='euclidean', feat_norm=False)), samples)
    _assert_metrics(raw, _reference(samples, metric='euclidean', feat_norm=False))
    assert raw['mAP'] != pytest.approx(euc['mAP'], abs=1e-6)


def _squared_euclidean_blocks(samples):
    """(q_g, q_q, g_g) squared Euclidean distances of the L2-normalised features."""
    query, gallery = _split(samples)
    q = np.stack([_unit(np.asarray(s['pred_feature'], dtype=np.float64)) for s in query])
    g = np.stack([_unit(np.asarray(s['pred_feature'], dtype=np.float64)) for s in gallery])
    sq = lambda a, b: ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # noqa: E731
    return sq(q, g), sq(q, q), sq(g, g)


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
def test_rerank_gets_the_papers_distance(metric):
    # Re-ranking must be fed the paper's distance: squared Euclidean of the
    # normalised features (cosine is half of it; the row scaling cancels it).
    samples = _samples(seed=5)
    cfg = dict(type='ReIDMetric', metric=metric, rerank=dict(k1=5, k2=2))
    out = _run(METRICS.build(cfg), samples)
    reranked = re_ranking(*_squared_euclidean_blocks(samples), k1=5, k2=2, lambda_value=0.3)
    _assert_metrics(out, _reference(samples, distmat=reranked))
    plain = _run(METRICS.build(dict(type='ReIDMetric', metric=metric)), samples)
    assert out['mAP'] != pytest.approx(plain['mAP'], abs=1e-6)
    assert METRICS.build(dict(type='ReIDMetric', rerank=True)).rerank == dict(
        k1=20, k2=6, lambda_value=0.3
    )


@pytest.mark.parametrize('rerank', [False, True])
def test_metrics_unchanged_inside_autocast(rerank):
    # compute_metrics may run inside an autocast region (e.g. fp16 test
    # loops); its float64 distances and re-ranking are not autocast-eligible.
    samples = _samples(seed=6)
    cfg = dict(type='ReIDMetric', rerank=dict(k1=5, k2=2) if rerank else False)
    outside = _run(METRICS.build(cfg), samples)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside = _run(METRICS.build(cfg), samples)
    assert inside == outside


def test_errors():
    samples = _samples(seed=6)
    with pytest.raises(ValueError, match='no query samples'):
        _run(METRICS.build(dict(type='ReIDMetric')), [s for s in samples if not s['is_query']])
    with pytest.raises(ValueError, match='no gallery samples'):
        _run(METRICS.build(dict(type='ReIDMetric')), [s for s in samples if s['is_query']])
    samples[3]['pred_feature'] = torch.zeros(8)
    with pytest.raises(
        ValueError, match=r'Feature dims differ between samples: found dims \[8, 16\]'
    ):
        _run(METRICS.build(dict(type='ReIDMetric')), samples)
    with pytest.raises(ValueError, match='received no samples'):
        METRICS.build(dict(type='ReIDMetric')).compute_metrics([])
    bad = dict(samples[0])
    bad.pop('camid')
    with pytest.raises(KeyError, match=r"needs \['camid'\]"):
        METRICS.build(dict(type='ReIDMetric')).process({}, [bad])
    with pytest.raises(ValueError, match=r'ranks must be an int in \[1, max_rank=5\]'):
        METRICS.build(dict(type='ReIDMetric', ranks=(1, 10), max_rank=5))
    with pytest.raises(ValueError, match='Unknown rerank options'):
        METRICS.build(dict(type='ReIDMetric', rerank=dict(k3=1)))
    with pytest.raises(ValueError, match='metric must be one of'):
        METRICS.build(dict(type='ReIDMetric', metric='l1'))
