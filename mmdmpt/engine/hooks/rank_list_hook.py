"""Rank-list pictures of a test run, drawn through the runner's visualizer.

:class:`RankListHook` keeps the test record of every sample of a test run
(:func:`mmdmpt.structures.sample_record`), gathers them from all ranks as the
metric's results are gathered, and on rank 0 writes the rank lists of some
queries with :func:`write_rank_lists`: the search is the evaluation's
(:class:`~mmdmpt.evaluation.GallerySearcher`: same distance, same stable
ties, same removal rule), the images are read as the dataset reads them
(:func:`~mmdmpt.datasets.load_sample_images`), and the drawing is the
visualizer's (:class:`~mmdmpt.visualization.ReIDVisualizer`), the way
mmpretrain's ``VisualizationHook`` draws predictions.
"""

import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import collect_results, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdmpt.datasets import load_sample_images
from mmdmpt.evaluation import GallerySearcher
from mmdmpt.registry import HOOKS
from mmdmpt.structures import ReIDFeatures, removal_rule_name, sample_record
from mmdmpt.utils.errors import ConfigError, DataError
from mmdmpt.visualization import ReIDVisualizer, draw_rank_list, save_image, select_queries
from mmdmpt.visualization.rank_list import DEFAULT_LEGEND

__all__ = ['RankListHook', 'write_rank_lists']


def _as_list(value: Any) -> list:
    return value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else list(value)


def write_rank_lists(
    features: Dict[str, Any],
    out_dir: str,
    dataset: Optional[Any] = None,
    query_indices: Optional[Sequence[int]] = None,
    num_queries: int = 8,
    topk: int = 10,
    metric: str = 'cosine',
    feat_norm: bool = True,
    tile_size: Optional[Tuple[int, int]] = None,
    visualizer: Optional[ReIDVisualizer] = None,
) -> List[str]:
    """Write rank-list PNGs of some queries of a features dict.

    The ranking is the one the evaluation scores: features L2-normalised
    (``feat_norm``), distances by ``metric``, stable ties, and the gallery
    samples with the query's identity and camera (or scene, when the
    features have scene ids) removed.

    Args:
        features (dict): A features dict (:class:`~mmdmpt.structures.ReIDFeatures`).
        out_dir (str): Folder for the PNGs (created).
        dataset (BaseDataset, optional): The dataset the features were
            extracted from; images are read through its data infos (needed
            for strip layouts such as RGBNT100). Defaults to None: the
            features' ``img_paths`` are read as one file per modality.
        query_indices (Sequence[int], optional): Indices among the query
            samples (``0 .. Q-1``, dataset order). Defaults to None:
            ``num_queries`` spread evenly.
        num_queries (int): Queries drawn when ``query_indices`` is None.
            Defaults to 8.
        topk (int): Gallery samples per query. Defaults to 10.
        metric (str): ``'cosine'`` or ``'euclidean'``. Defaults to
            ``'cosine'``.
        feat_norm (bool): L2-normalise the features first (as ReIDMetric).
            Defaults to True.
        tile_size (tuple[int, int], optional): ``(h, w)`` of one modality
            image. Defaults to None (see
            :func:`~mmdmpt.visualization.draw_rank_list`).
        visualizer (ReIDVisualizer, optional): Draws and writes the pictures.
            Defaults to None (the drawing functions directly).

    Returns:
        list[str]: The files written, one per query, named
        ``query{index:04d}_id{pid}.png``.
    """
    query, gallery = ReIDFeatures(features).split()
    num_query, num_gallery = query.num_samples, gallery.num_samples
    if num_query == 0 or num_gallery == 0:
        raise DataError(
            f'need query and gallery samples, got {num_query} queries and {num_gallery} gallery; '
            "extract the features of a split with both (split='test' or 'val')"
        )
    if query_indices is None:
        query_indices = select_queries(num_query, num_queries)
    query_indices = [int(i) for i in query_indices]
    bad = [i for i in query_indices if not 0 <= i < num_query]
    if bad:
        raise ConfigError(
            f'query indices {bad} out of range: there are {num_query} queries; expected '
            f'indices in [0, {num_query - 1}]'
        )
    if not query_indices:
        return []
    features = ReIDFeatures(features)
    rule = features.removal_rule
    use_scenes = rule == 'scene'
    q_feats = torch.as_tensor(query['feats']).float()
    g_feats = torch.as_tensor(gallery['feats']).float()
    if feat_norm:
        q_feats, g_feats = F.normalize(q_feats, dim=1), F.normalize(g_feats, dim=1)
    searcher = GallerySearcher(
        g_feats,
        metric,
        gallery_pids=gallery['pids'],
        gallery_camids=gallery['camids'],
        gallery_sceneids=gallery['sceneids'] if use_scenes else None,
        removal_rule=rule,
    )
    sel = torch.tensor(query_indices)
    result = searcher.search(
        q_feats[sel],
        k=topk,
        query_pids=query['pids'][sel],
        query_camids=query['camids'][sel],
        query_sceneids=query['sceneids'][sel] if use_scenes else None,
    )
    modalities = list(features['modalities'])
    legend = list(DEFAULT_LEGEND)
    if rule != 'none':
        legend.append(
            f'hidden from the ranking, as in the metric: gallery samples with the '
            f'{removal_rule_name(rule)} as the query'
        )
    if features.get('missing'):
        legend.append(f'modalities left out: {", ".join(features["missing"])}')
    name = features.get('dataset_name') or 'dataset'

    def images(part: Dict[str, Any], row: int) -> List[Optional[np.ndarray]]:
        present = _as_list(part['modality_mask'][row])
        if dataset is not None:
            info = dataset.get_data_info(int(part['sample_idx'][row]))
            if list(map(str, info['img_paths'])) != list(map(str, part['img_paths'][row])):
                raise DataError(
                    f'sample {int(part["sample_idx"][row])} of the dataset has img_paths '
                    f'{info["img_paths"]}, the features {part["img_paths"][row]}: the features '
                    'come from another dataset or split'
                )
        else:
            info = dict(img_paths=part['img_paths'][row], modalities=modalities)
        return load_sample_images(info, present)

    cache: Dict[int, List[Optional[np.ndarray]]] = {}
    written = []
    for n, qi in enumerate(query_indices):
        entries = []
        for j, dist in zip(result.indices[n].tolist(), result.distances[n].tolist()):
            if j < 0:
                continue
            if j not in cache:
                cache[j] = images(gallery, j)
            pid = int(gallery['pids'][j])
            entries.append((cache[j], pid == int(query['pids'][qi]), dist, pid))
        pid = int(query['pids'][qi])
        cam = int(query['camids'][qi])
        scene = f', scene {int(query["sceneids"][qi])}' if use_scenes else ''
        title = (
            f'{name}: query {qi} (sample {int(query["sample_idx"][qi])}), id {pid}, camera '
            f'{cam}{scene}; top-{len(entries)} of {num_gallery} gallery samples ({metric})'
        )
        options = dict(
            modalities=modalities,
            query_pid=pid,
            tile_size=tile_size,
            title=title,
            legend=legend,
            query_label=f'cam {cam}{scene}',
        )
        out_file = osp.join(out_dir, f'query{qi:04d}_id{pid}.png')
        if visualizer is not None:
            _, path = visualizer.add_rank_list(
                osp.basename(out_file), images(query, qi), entries, out_file=out_file, **options
            )
        else:
            path = save_image(draw_rank_list(images(query, qi), entries, **options), out_file)
        written.append(path)
    print_log(f'Wrote {len(written)} rank-list pictures to {out_dir}', logger='current')
    return written


def _metric_options(runner) -> dict:
    """Distance, normalisation and collect device of the first ReID-like test metric."""
    evaluator = getattr(runner, '_test_evaluator', None) or getattr(runner, 'test_evaluator', None)
    for metric in getattr(evaluator, 'metrics', []) or []:
        if hasattr(metric, 'metric') and hasattr(metric, 'feat_norm'):
            return dict(
                metric=metric.metric,
                feat_norm=metric.feat_norm,
                collect_device=getattr(metric, 'collect_device', 'cpu'),
            )
    return dict(metric='cosine', feat_norm=True, collect_device='cpu')


@HOOKS.register_module()
class RankListHook(Hook):
    """Draw rank lists of the first evaluation of each test run.

    With ``enable``, the hook keeps every test sample's record, gathers them
    on rank 0 after the test epoch (padding of distributed samplers removed)
    and writes the rank lists of ``num_queries`` queries (spread evenly over
    the query set) into ``out_dir`` through the runner's visualizer. With
    ``--missing all`` only the first evaluation (all modalities) is drawn.
    ``tools/test.py --show-dir DIR`` turns it on.

    Args:
        enable (bool): Draw. Defaults to False.
        out_dir (str, optional): Folder of the PNGs. Defaults to None:
            ``<work_dir>/rank_lists``.
        num_queries (int): Queries drawn. Defaults to 8.
        topk (int): Gallery samples per query. Defaults to 10.
        tile_size (tuple[int, int], optional): ``(h, w)`` of one modality
            image. Defaults to None (by the images' shape).
    """

    priority = 'NORMAL'

    def __init__(
        self,
        enable: bool = False,
        out_dir: Optional[str] = None,
        num_queries: int = 8,
        topk: int = 10,
        tile_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        for name, value in (('num_queries', num_queries), ('topk', topk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f'RankListHook: {name} must be a positive int, got {value!r} (set '
                    f'default_hooks.rank_list.{name}).'
                )
        self.enable = bool(enable)
        self.out_dir = out_dir
        self.num_queries = num_queries
        self.topk = topk
        self.tile_size = tile_size
        self._records: List[dict] = []
        self._done = False
        self.written: List[str] = []

    def before_run(self, runner) -> None:
        """A new run (``runner.test()``): its first test evaluation will be drawn.

        Not ``before_test``: MMEngine's test loop calls that once per
        evaluation, and ``ReIDTestLoop`` evaluates once per missing-modality
        setting.
        """
        self._done = False
        self.written = []

    def before_test_epoch(self, runner) -> None:
        """Start collecting (for the first evaluation of the run only)."""
        self._records = []

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Keep the records of the batch's samples."""
        if self.enable and not self._done and outputs is not None:
            self._records.extend(sample_record(sample) for sample in outputs)

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Gather the records on rank 0 and write the pictures there."""
        if not self.enable or self._done:
            return
        self._done = True
        dataset = runner.test_dataloader.dataset
        options = _metric_options(runner)
        records = collect_results(self._records, len(dataset), options['collect_device'])
        self._records = []
        if not is_main_process() or not records:
            return
        meta = dict(getattr(dataset, 'metainfo', {}) or {})
        missing = ()
        loader = getattr(getattr(runner, 'test_loop', None), 'current_missing', None)
        if loader:
            missing = tuple(loader)
        features = ReIDFeatures.from_records(
            records,
            meta.get('modalities'),
            missing=missing,
            dataset_name=str(meta.get('dataset_name', '')),
            removal_rule=meta.get('removal_rule'),
        )
        visualizer = runner.visualizer if isinstance(runner.visualizer, ReIDVisualizer) else None
        out_dir = self.out_dir or osp.join(runner.work_dir, 'rank_lists')
        self.written = write_rank_lists(
            features,
            out_dir,
            dataset=dataset,
            num_queries=self.num_queries,
            topk=self.topk,
            metric=options['metric'],
            feat_norm=options['feat_norm'],
            tile_size=self.tile_size,
            visualizer=visualizer,
        )
