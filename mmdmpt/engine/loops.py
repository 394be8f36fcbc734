"""Test loop with missing-modality evaluation."""

import copy
import itertools
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import is_main_process
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.runner import TestLoop
from mmengine.structures import BaseDataElement
from torch.utils.data import DataLoader

from mmdmpt.registry import LOOPS

LOADER_TYPE = 'LoadMultiModalImages'


def parse_missing(
    missing: Union[None, str, Sequence[str]], modalities: Sequence[str]
) -> List[Tuple[str, ...]]:
    """Turn a ``--missing`` value into the list of modality sets to leave out.

    Args:
        missing: ``None`` (nothing missing), ``'all'`` (every non-empty subset
            of ``modalities`` kept, one evaluation each, the full set first), or
            comma-separated names / a sequence of names to leave out.
        modalities: The dataset's modalities, in order.

    Returns:
        A list of tuples of missing modality names, one per evaluation.

    Raises:
        ValueError: If a name is not one of ``modalities`` or all would be
            left out.
    """
    modalities = tuple(modalities)
    if missing is None:
        return [()]
    if isinstance(missing, str) and missing.strip().lower() == 'all':
        settings = []
        for keep in range(len(modalities), 0, -1):
            for kept in itertools.combinations(modalities, keep):
                settings.append(tuple(m for m in modalities if m not in kept))
        return settings
    names = missing.split(',') if isinstance(missing, str) else list(missing)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in modalities]
    if unknown:
        raise ValueError(
            f'missing: unknown modality {unknown}; the dataset has {list(modalities)} '
            '(or use "all").'
        )
    if set(names) >= set(modalities):
        raise ValueError(
            f'missing: leaving out {names} would leave no modality; keep at least one '
            f'of {list(modalities)}.'
        )
    return [tuple(m for m in modalities if m in names)]


def set_missing_in_pipeline(dataloader_cfg: dict, missing: Sequence[str]) -> dict:
    """Return a copy of ``dataloader_cfg`` whose loader drops ``missing``."""
    cfg = copy.deepcopy(dataloader_cfg)
    pipeline = cfg.get('dataset', {}).get('pipeline', [])
    loaders = [t for t in pipeline if isinstance(t, dict) and t.get('type') == LOADER_TYPE]
    if not loaders:
        raise ValueError(
            f'missing-modality testing needs a {LOADER_TYPE} transform in '
            'test_dataloader.dataset.pipeline; none was found.'
        )
    for transform in loaders:
        transform['missing_modalities'] = tuple(missing)
    return cfg


def _scalar(value, default: int = -1) -> int:
    if value is None:
        return default
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1)[0].item()
    return int(value)


class _RankListCollector(BaseMetric):
    """Keeps each test sample's feature and ids for the rank-list pictures.

    Appended to the test evaluator for one evaluation, it rides on
    :class:`~mmengine.evaluator.BaseMetric`'s result collection: every rank
    keeps its samples in :meth:`process`, ``evaluate`` gathers them (padding
    included) on rank 0, where :meth:`compute_metrics` stores them in
    ``collected`` and returns no metric.
    """

    default_prefix = 'show'

    def __init__(self, collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device)
        self.collected: Optional[List[dict]] = None

    def process(self, data_batch, data_samples: Sequence) -> None:
        """Keep small CPU copies of the features and ids."""
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            feature = torch.as_tensor(sample['pred_feature']).detach()
            mask = sample.get('modality_mask')
            self.results.append(
                dict(
                    feature=feature.to('cpu', torch.float32).reshape(-1).clone(),
                    pid=_scalar(sample.get('gt_label')),
                    camid=_scalar(sample.get('camid')),
                    sceneid=_scalar(sample.get('sceneid')),
                    is_query=bool(_scalar(sample.get('is_query'), 0)),
                    sample_idx=_scalar(sample.get('sample_idx')),
                    modality_mask=None
                    if mask is None
                    else torch.as_tensor(mask, dtype=torch.bool).cpu().clone(),
                    img_paths=[str(p) for p in sample.get('img_paths') or []],
                )
            )

    def compute_metrics(self, results: list) -> dict:
        """Store the gathered results (rank 0 only); no metric."""
        self.collected = list(results)
        return {}


def _features_from_records(records: List[dict], modalities: Sequence[str], meta: dict) -> dict:
    """A features dict (see :mod:`mmdmpt.apis.features`) from collected samples."""
    unique: Dict[int, dict] = {}
    for i, r in enumerate(records):  # drop the padding of distributed samplers
        unique.setdefault(r['sample_idx'] if r['sample_idx'] >= 0 else -1 - i, r)
    rows = [unique[k] for k in sorted(unique)]
    num_mod = len(modalities)
    sceneids = torch.tensor([r['sceneid'] for r in rows], dtype=torch.int64)
    return dict(
        feats=torch.stack([r['feature'] for r in rows]),
        pids=torch.tensor([r['pid'] for r in rows], dtype=torch.int64),
        camids=torch.tensor([r['camid'] for r in rows], dtype=torch.int64),
        sceneids=sceneids,
        is_query=torch.tensor([r['is_query'] for r in rows], dtype=torch.bool),
        sample_idx=torch.tensor([r['sample_idx'] for r in rows], dtype=torch.int64),
        modality_mask=torch.stack(
            [
                r['modality_mask']
                if r['modality_mask'] is not None
                else torch.ones(num_mod, dtype=torch.bool)
                for r in rows
            ]
        ),
        img_paths=[r['img_paths'] for r in rows],
        modalities=list(modalities),
        has_scenes=bool((sceneids >= 0).all()),
        normalized=False,
        missing=list(meta.get('missing', ())),
        dataset_name=str(meta.get('dataset_name', '')),
    )


@LOOPS.register_module()
class ReIDTestLoop(TestLoop):
    """Test loop that can evaluate with some modalities absent, and draw rank lists.

    Each setting rebuilds the test dataloader with
    ``LoadMultiModalImages(missing_modalities=...)``, so absent images are never
    read, and the model sees the samples' ``modality_mask``.

    With ``show_dir``, the first evaluation also keeps every test sample's
    ``pred_feature`` and ids, and rank 0 then writes the rank lists of
    ``show_num`` queries (spread evenly over the query set) into
    ``show_dir``: the query's modalities and its ``show_topk`` nearest gallery
    samples framed green (same id) or red, with the samples the metric removes
    (same id and same camera / scene) hidden, ranked with the first
    ``ReIDMetric``'s distance. In distributed runs the samples of all ranks
    are gathered to rank 0 as the metric's results are (MMEngine's
    ``collect_results`` with the metric's ``collect_device``), and only rank
    0 draws.

    Args:
        runner: The runner.
        dataloader (dict): Config of the test dataloader.
        evaluator (dict | list): Config of the evaluator.
        fp16 (bool): Test with autocast. Defaults to False.
        missing (str | Sequence[str], optional): Modalities to leave out, or
            ``'all'`` for every non-empty subset (one table). Defaults to None.
        out_file (str, optional): Write the metrics of every setting to this
            JSON file. Defaults to None.
        show_dir (str, optional): Write rank-list PNGs of the first
            evaluation into this folder. Defaults to None (no pictures).
        show_num (int): Queries drawn with ``show_dir``. Defaults to 8.
        show_topk (int): Gallery samples per query with ``show_dir``.
            Defaults to 10.
    """

    def __init__(
        self,
        runner,
        dataloader: Union[DataLoader, Dict],
        evaluator: Union[Dict, List],
        fp16: bool = False,
        missing: Union[None, str, Sequence[str]] = None,
        out_file: Optional[str] = None,
        show_dir: Optional[str] = None,
        show_num: int = 8,
        show_topk: int = 10,
    ) -> None:
        for name, value in (('show_num', show_num), ('show_topk', show_topk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        self._dataloader_cfg = copy.deepcopy(dataloader) if isinstance(dataloader, dict) else None
        super().__init__(runner, dataloader, evaluator, fp16)
        self.modalities = tuple(self.dataloader.dataset.metainfo['modalities'])
        self.settings = parse_missing(missing, self.modalities)
        if self.settings != [()] and self._dataloader_cfg is None:
            raise ValueError('missing-modality testing needs test_dataloader as a config dict')
        self.out_file = out_file
        self.show_dir = show_dir
        self.show_num = show_num
        self.show_topk = show_topk

    def _reid_metric_options(self) -> dict:
        """Distance, normalisation and collect device of the first ReID-like metric."""
        for metric in getattr(self.evaluator, 'metrics', []):
            if hasattr(metric, 'metric') and hasattr(metric, 'feat_norm'):
                return dict(
                    metric=metric.metric,
                    feat_norm=metric.feat_norm,
                    collect_device=getattr(metric, 'collect_device', 'cpu'),
                )
        return dict(metric='cosine', feat_norm=True, collect_device='cpu')

    def _evaluate(self, show: bool, missing: Tuple[str, ...]) -> dict:
        """One evaluation; with ``show``, also draw the rank lists (rank 0)."""
        if not show:
            return super().run()
        options = self._reid_metric_options()
        collector = _RankListCollector(collect_device=options['collect_device'])
        self.evaluator.metrics.append(collector)
        try:
            metrics = super().run()
        finally:
            self.evaluator.metrics.remove(collector)
        if is_main_process() and collector.collected:
            from mmdmpt.visualization import draw_rank_lists

            dataset = self.dataloader.dataset
            meta = dict(getattr(dataset, 'metainfo', {}) or {}, missing=missing)
            features = _features_from_records(collector.collected, self.modalities, meta)
            draw_rank_lists(
                features,
                self.show_dir,
                dataset=dataset,
                num_queries=self.show_num,
                topk=self.show_topk,
                metric=options['metric'],
                feat_norm=options['feat_norm'],
            )
        return metrics

    def run(self) -> dict:
        """Evaluate once per setting and return the metrics of the first.

        The dataloader of each setting with missing modalities is built for
        that setting only; the loop's own dataloader is restored afterwards,
        so a second ``runner.test()`` starts from the full set again.
        """
        table: OrderedDict[str, dict] = OrderedDict()
        original = self.dataloader
        try:
            for i, missing in enumerate(self.settings):
                present = '+'.join(m for m in self.modalities if m not in missing)
                self.dataloader = original
                if missing:
                    cfg = set_missing_in_pipeline(self._dataloader_cfg, missing)
                    self.dataloader = self.runner.build_dataloader(cfg, seed=self.runner.seed)
                    print_log(
                        f'Testing with modalities: {present} (missing: {",".join(missing)})',
                        logger='current',
                    )
                table[present] = self._evaluate(bool(self.show_dir) and i == 0, missing)
        finally:
            self.dataloader = original
        if len(table) > 1:
            print_log(format_table(table), logger='current')
        if self.out_file and is_main_process():
            out_dir = osp.dirname(osp.abspath(self.out_file))
            os.makedirs(out_dir, exist_ok=True)
            with open(self.out_file, 'w') as f:
                json.dump(
                    {k: {n: float(v) for n, v in m.items()} for k, m in table.items()}, f, indent=2
                )
        return next(iter(table.values()))


def format_table(table: Dict[str, dict]) -> str:
    """Format ``{modalities: metrics}`` as a fixed-width text table."""
    names = []
    for metrics in table.values():
        names += [n for n in metrics if n not in names]
    width = max(len(k) for k in table) + 2
    header = 'modalities'.ljust(width) + ''.join(n.split('/')[-1].rjust(9) for n in names)
    lines = ['Missing-modality evaluation', header, '-' * len(header)]
    for present, metrics in table.items():
        values = ''.join(f'{metrics.get(n, float("nan")):9.2f}' for n in names)
        lines.append(present.ljust(width) + values)
    return '\n'.join(lines)
