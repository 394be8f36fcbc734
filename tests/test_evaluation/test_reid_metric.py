"""ReIDMetric end to end: registry, process, compute_metrics, two ranks."""

import logging

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmpretrain.structures import DataSample

import mmdmpt.evaluation  # noqa: F401  (registers ReIDMetric)
from mmdmpt.evaluation.functional import evaluate_features
from mmdmpt.registry import METRICS


def _samples(seed=0, num=60, dim=16, scenes=False, as_data_sample=False):
    """Samples as the model would return them: 1/4 queries, the rest gallery."""
    rng = np.random.default_rng(seed)
    pids = rng.integers(0, 8, num)
    centers = rng.normal(size=(8, dim))
    feats = centers[pids] + 0.8 * rng.normal(size=(num, dim))
    out = []
    for i in range(num):
        meta = dict(camid=int(rng.integers(0, 3)), is_query=bool(i % 4 == 0), sample_idx=i)
        if scenes:
            meta['sceneid'] = int(rng.integers(0, 3))
        if as_data_sample:
            sample = DataSample().set_gt_label(int(pids[i]))
            sample.set_metainfo(meta)
            sample.pred_feature = torch.tensor(feats[i], dtype=torch.float32)
        else:
            sample = dict(
                meta, pred_feature=torch.tensor(feats[i], dtype=torch.float32)
            )  # as after to_dict(): gt_label a (1,) tensor
            sample['gt_label'] = torch.tensor([pids[i]])
        out.append(sample)
    return out


def _expected(samples, scenes=False, **kwargs):
    get = lambda s, k: s[k] if isinstance(s, dict) else s.get(k)  # noqa: E731
    query = [s for s in samples if get(s, 'is_query')]
    gallery = [s for s in samples if not get(s, 'is_query')]

    def ids(part, key):
        return np.array([int(np.asarray(get(s, key)).reshape(-1)[0]) for s in part])

    feats = lambda part: torch.nn.functional.normalize(  # noqa: E731
        torch.stack([get(s, 'pred_feature') for s in part]), dim=1
    )
    res = evaluate_features(
        feats(query),
        feats(gallery),
        ids(query, 'gt_label'),
        ids(gallery, 'gt_label'),
        ids(query, 'camid'),
        ids(gallery, 'camid'),
        query_sceneids=ids(query, 'sceneid') if scenes else None,
        gallery_sceneids=ids(gallery, 'sceneid') if scenes else None,
        **kwargs,
    )
    return {
        'mAP': 100 * res['mAP'],
        'mINP': 100 * res['mINP'],
        'Rank-1': 100 * res['cmc'][0],
        'Rank-5': 100 * res['cmc'][4],
        'Rank-10': 100 * res['cmc'][9],
    }


def _run(metric, samples, batch=7):
    for start in range(0, len(samples), batch):
        metric.process({}, samples[start : start + batch])
    return metric.compute_metrics(metric.results)


@pytest.mark.parametrize('as_data_sample', [False, True])
def test_end_to_end_through_registry(as_data_sample):
    metric = METRICS.build(dict(type='ReIDMetric'))
    assert metric.prefix == 'reid'
    samples = _samples(as_data_sample=as_data_sample)
    out = _run(metric, samples)
    assert list(out) == ['mAP', 'mINP', 'Rank-1', 'Rank-5', 'Rank-10']
    expected = _expected(samples)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-9)
    assert 0 < out['mAP'] <= 100 and out['Rank-1'] <= out['Rank-5'] <= out['Rank-10'] <= 100


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
    assert set(out) == {'reid/mAP', 'reid/mINP', 'reid/Rank-1', 'reid/Rank-3'}
    messages = ' '.join(r.getMessage() for r in records)
    assert '15 queries, 45 gallery samples' in messages and 'queries skipped' in messages


def test_scene_rule_chosen_from_data():
    samples = _samples(seed=1, scenes=True)
    out = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    expected = _expected(samples, scenes=True)
    assert out['mAP'] == pytest.approx(expected['mAP'], abs=1e-9)
    assert out['mAP'] != pytest.approx(_expected(samples)['mAP'], abs=1e-6)  # rule matters
    # one sample without a scene: back to the camera rule
    samples[5].pop('sceneid')
    out = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    assert out['mAP'] == pytest.approx(_expected(samples)['mAP'], abs=1e-9)


def test_duplicates_removed_and_order_fixed_by_sample_idx():
    samples = _samples(seed=2)
    single = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    shuffled = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))]
    shuffled += samples[:5]  # padded repeats
    again = _run(METRICS.build(dict(type='ReIDMetric')), shuffled)
    assert again == pytest.approx(single)


def test_two_rank_simulation_equals_single_rank():
    samples = _samples(seed=3, num=61, scenes=True)
    single = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    # DefaultSampler-like split: rank r takes r, r + 2, ...; rank 1 is padded
    # with a repeat of sample 0 so that both ranks hold 31 samples.
    rank0 = METRICS.build(dict(type='ReIDMetric'))
    rank1 = METRICS.build(dict(type='ReIDMetric'))
    _run(rank0, samples[0::2])
    _run(rank1, samples[1::2] + samples[:1])
    assert len(rank0.results) == len(rank1.results) == 31
    collected = rank0.results + rank1.results  # as collect_results concatenates
    assert rank0.compute_metrics(collected) == pytest.approx(single)


def test_euclidean_on_normalised_features_ranks_like_cosine():
    samples = _samples(seed=4)
    cos = _run(METRICS.build(dict(type='ReIDMetric', metric='cosine')), samples)
    euc = _run(METRICS.build(dict(type='ReIDMetric', metric='euclidean')), samples)
    assert euc == pytest.approx(cos, abs=1e-9)
    raw = _run(METRICS.build(dict(type='ReIDMetric', metric='euclidean', feat_norm=False)), samples)
    assert set(raw) == set(cos)


def test_rerank_options():
    samples = _samples(seed=5)
    plain = _run(METRICS.build(dict(type='ReIDMetric')), samples)
    out = _run(METRICS.build(dict(type='ReIDMetric', rerank=dict(k1=5, k2=2))), samples)
    assert set(out) == set(plain) and all(0 <= v <= 100 for v in out.values())
    metric = METRICS.build(dict(type='ReIDMetric', rerank=True))
    assert metric.rerank == dict(k1=20, k2=6, lambda_value=0.3)


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
