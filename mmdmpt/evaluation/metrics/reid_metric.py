"""ReID retrieval metric: mAP, mINP and CMC ranks on a query/gallery split."""

import logging
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Union

import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement

from mmdmpt.registry import METRICS
from mmdmpt.structures import REMOVAL_RULES, ReIDFeatures, removal_rule_name, sample_record
from mmdmpt.utils.errors import ConfigError, DataError

from ..functional import evaluate_distmat, evaluate_features, re_ranking_from_features
from ..functional._utils import check_max_rank, check_metric
from ..functional.rerank import _check_params as check_rerank_params

_RERANK_DEFAULTS = dict(k1=20, k2=6, lambda_value=0.3)
_RERANK_KEYS = ('k1', 'k2', 'lambda_value', 'dtype', 'max_samples')


@METRICS.register_module()
class ReIDMetric(BaseMetric):
    """mAP, mINP and CMC Rank-k of query-gallery retrieval, in percent.

    Each test sample carries ``pred_feature`` (1-D float tensor),
    ``gt_label`` (identity), ``camid``, ``is_query`` and, where the benchmark
    has scenes, ``sceneid``; ``sample_idx`` is used to drop duplicates (the
    padding of distributed samplers) and to fix the gallery order. A gallery
    sample is removed from a query's ranking when it has the same identity and
    the same camera -- or the same scene, whatever the camera, when *every*
    sample carries a ``sceneid`` (MSVR310). A dataset states its rule in its
    metainfo (``removal_rule``: ``'camera'``, ``'scene'`` or ``'none'`` for
    data without cameras), which MMEngine hands over as ``dataset_meta``; it
    is then used instead of the automatic choice. See
    :mod:`mmdmpt.evaluation.functional.rank` for the protocol.

    Args:
        metric (str): ``'cosine'`` or ``'euclidean'`` (plain, not squared).
            Defaults to ``'cosine'``.
        feat_norm (bool): L2-normalise the features first (matters for
            ``'euclidean'``; cosine normalises anyway). Defaults to True.
        ranks (Sequence[int]): CMC ranks reported as ``Rank-k``, each in
            ``[1, max_rank]``. Defaults to ``(1, 5, 10)``.
        max_rank (int): Length of the CMC curve computed. Defaults to 50.
        rerank (bool | dict): k-reciprocal re-ranking; True uses ``k1=20,
            k2=6, lambda_value=0.3``, a dict overrides some of ``k1``,
            ``k2``, ``lambda_value``, ``dtype``, ``max_samples`` (see
            :func:`~mmdmpt.evaluation.functional.re_ranking`). Defaults to
            False.
        collect_device (str): ``'cpu'`` or ``'gpu'``, used to collect the
            results of all ranks. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names. Defaults to None,
            i.e. ``'reid'``.
        collect_dir (str, optional): Folder used to collect results on CPU.
            Defaults to None.

    Examples:
        >>> from mmdmpt.registry import METRICS
        >>> metric = METRICS.build(dict(type='ReIDMetric', ranks=(1, 5)))
    """

    default_prefix: Optional[str] = 'reid'

    def __init__(
        self,
        metric: str = 'cosine',
        feat_norm: bool = True,
        ranks: Sequence[int] = (1, 5, 10),
        max_rank: int = 50,
        rerank: Union[bool, dict] = False,
        collect_device: str = 'cpu',
        prefix: Optional[str] = None,
        collect_dir: Optional[str] = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        try:
            self.metric = check_metric(metric)
            self.max_rank = check_max_rank(max_rank)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f'ReIDMetric (the evaluator): {exc}') from None
        self.feat_norm = bool(feat_norm)
        ranks = tuple(ranks)
        for k in ranks:
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_rank:
                raise ConfigError(
                    f'Each of ranks must be an int in [1, max_rank={max_rank}], got {k!r}.'
                )
        self.ranks = ranks
        self.rerank = self._rerank_kwargs(rerank)

    @staticmethod
    def _rerank_kwargs(rerank: Union[bool, dict, None]) -> Optional[dict]:
        if rerank is None or rerank is False:
            return None
        if rerank is True:
            return dict(_RERANK_DEFAULTS)
        if isinstance(rerank, Mapping):
            unknown = set(rerank) - set(_RERANK_KEYS)
            if unknown:
                raise ConfigError(
                    f'Unknown rerank options {sorted(unknown)}; allowed: {list(_RERANK_KEYS)}.'
                )
            kwargs = {**_RERANK_DEFAULTS, **rerank}
            # Checked now rather than after a whole test pass.
            check_rerank_params(
                kwargs['k1'], kwargs['k2'], kwargs['lambda_value'], kwargs.get('dtype', 'float32')
            )
            return kwargs
        raise ConfigError(f'rerank must be a bool or a dict, got {type(rerank).__name__}.')

    def process(
        self, data_batch: Any, data_samples: Sequence[Union[dict, BaseDataElement]]
    ) -> None:
        """Keep the test record of each sample (:func:`~mmdmpt.structures.sample_record`).

        Args:
            data_batch (Any): The batch from the dataloader (unused).
            data_samples (Sequence[dict | BaseDataElement]): The model's
                outputs, as dicts (what MMEngine passes after ``to_dict()``)
                or data samples.
        """
        for sample in data_samples:
            try:
                self.results.append(sample_record(sample))
            except TypeError as exc:
                raise TypeError(f'ReIDMetric: {exc}') from None
            except KeyError as exc:
                raise KeyError(f'ReIDMetric: {exc.args[0]}') from None

    def _removal_rule(self, features: ReIDFeatures) -> str:
        """The removal rule: the dataset's (``dataset_meta['removal_rule']``) or the data's.

        Without a stated rule, scenes are compared when every sample has a
        ``sceneid`` (MSVR310), else cameras.
        """
        num = features.num_samples
        with_scene = int((features['sceneids'] >= 0).sum())
        stated = (self.dataset_meta or {}).get('removal_rule')
        if stated is not None:
            if stated not in REMOVAL_RULES:
                raise ConfigError(
                    f"ReIDMetric: the dataset's removal_rule is {stated!r}; expected one of "
                    f'{REMOVAL_RULES}.'
                )
            if stated == 'scene' and with_scene < num:
                raise DataError(
                    f"ReIDMetric: the dataset's removal rule is 'scene' but only {with_scene} of "
                    f'{num} test samples carry a sceneid.'
                )
            return stated
        if 0 < with_scene < num:
            print_log(
                f'ReIDMetric: only {with_scene} of {num} samples have a sceneid; '
                f'using the rule {removal_rule_name("camera")}.',
                logger='current',
                level=logging.WARNING,
            )
        return features.removal_rule

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Compute the metrics from the collected results of all ranks.

        Duplicates (the padding of distributed samplers) are dropped by
        ``sample_idx`` (:func:`~mmdmpt.structures.deduplicate_records`).

        Args:
            results (list[dict]): The records of :meth:`process`.

        Returns:
            dict[str, float]: ``mAP``, ``mINP`` and ``Rank-k`` for each of
            ``ranks``, in percent.
        """
        if not results:
            raise ValueError('ReIDMetric received no samples to evaluate.')
        dims = sorted({int(r['feature'].numel()) for r in results})
        if len(dims) > 1:
            raise ValueError(f'Feature dims differ between samples: found dims {dims}.')
        features = ReIDFeatures.from_records(results)
        query, gallery = features.split()
        num = features.num_samples
        if query.num_samples == 0:
            raise DataError(
                f'ReIDMetric found no query samples (is_query=True) among {num}; '
                "evaluate on a split with queries and gallery (dataset.split='test' or 'val')."
            )
        if gallery.num_samples == 0:
            raise DataError(
                f'ReIDMetric found no gallery samples (is_query=False) among {num}; '
                "evaluate on a split with queries and gallery (dataset.split='test' or 'val')."
            )

        rule = self._removal_rule(features)
        q_feats, g_feats = query['feats'], gallery['feats']
        if self.feat_norm:
            q_feats = F.normalize(q_feats, dim=1)
            g_feats = F.normalize(g_feats, dim=1)
        use_scenes = rule == 'scene'
        id_kwargs = dict(
            query_pids=query['pids'].numpy(),
            gallery_pids=gallery['pids'].numpy(),
            query_camids=query['camids'].numpy(),
            gallery_camids=gallery['camids'].numpy(),
            max_rank=self.max_rank,
            query_sceneids=query['sceneids'].numpy() if use_scenes else None,
            gallery_sceneids=gallery['sceneids'].numpy() if use_scenes else None,
            removal_rule=rule,
        )
        if self.rerank is not None:
            dist = re_ranking_from_features(q_feats, g_feats, metric=self.metric, **self.rerank)
            res = evaluate_distmat(dist, **id_kwargs)
        else:
            res = evaluate_features(q_feats, g_feats, metric=self.metric, **id_kwargs)

        print_log(
            f'ReIDMetric: {query.num_samples} queries, {gallery.num_samples} gallery samples, '
            f'{res["num_invalid_queries"]} queries skipped (no true match left); removal rule: '
            f'{removal_rule_name(rule)}; metric={self.metric}, '
            f'rerank={self.rerank is not None}.',
            logger='current',
        )
        metrics = {'mAP': 100.0 * res['mAP'], 'mINP': 100.0 * res['mINP']}
        for k in self.ranks:
            metrics[f'Rank-{k}'] = 100.0 * float(res['cmc'][k - 1])
        return metrics
