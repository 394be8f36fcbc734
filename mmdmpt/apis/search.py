"""Search a gallery of one's own images, and decide "same identity or not".

:class:`ReIDGallery` is what ``tools/search.py`` runs: the gallery (a folder
of modality folders, or an annotation CSV, read by
:class:`~mmdmpt.datasets.MultiModalReIDFolder` without splits) is embedded
once and its features cached on disk, keyed by the checkpoint's content, the
settings that shape the features (model, preprocessing, test pipeline,
modalities) and every gallery file's path, size and modification time; a
later run with the same checkpoint and unchanged files reads the cache.
Queries are samples ``{modality: image path or array}`` with any subset of
the modalities; results come with their distances and, given a threshold
(a number or a calibration file of
``tools/analysis_tools/calibrate_threshold.py``), the judgement "same
identity" (distance at most the threshold).

:func:`calibrate_on_features` computes such a calibration from the
features of a split of held-out identities.
"""

import copy
import hashlib
import json
import os
import os.path as osp
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from mmdmpt.datasets.transforms.loading import load_sample_images
from mmdmpt.evaluation.functional import (
    GallerySearcher,
    calibrate_threshold,
    pair_distances,
    roc_points,
)
from mmdmpt.registry import DATASETS
from mmdmpt.structures import MODALITIES, ReIDFeatures, removal_rule_name
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError
from mmdmpt.visualization import draw_rank_list, save_image

from .inference import (
    ReIDInferencer,
    _scope,
    _test_pipeline_cfg,
    checkpoint_threshold,
    evaluator_options,
    extract_dataset_features,
    file_digest,
)

__all__ = [
    'DEFAULT_CACHE_DIR',
    'ReIDGallery',
    'file_digest',
    'gallery_dataset_cfg',
    'gallery_features',
    'calibrate_on_features',
    'config_modalities',
]

#: Where ``tools/search.py`` keeps gallery features by default.
DEFAULT_CACHE_DIR = 'work_dirs/gallery_cache'
_FOLDER_TYPES = ('MultiModalReIDFolder', 'mmdmpt.MultiModalReIDFolder')
_CACHE_VERSION = 1


def config_modalities(cfg: Config) -> Tuple[str, ...]:
    """The modalities of a config: its ``modalities``, else its test dataset's or backbone's."""
    for source in (
        cfg.get('modalities'),
        ((cfg.get('test_dataloader') or {}).get('dataset') or {}).get('modalities'),
        ((cfg.get('model') or {}).get('backbone') or {}).get('modalities'),
    ):
        if source:
            return tuple(source)
    return MODALITIES


def gallery_dataset_cfg(
    cfg: Config,
    gallery: str,
    data_root: Optional[str] = None,
    modality_dirs: Optional[Mapping[str, str]] = None,
    name_pattern: Optional[str] = None,
) -> dict:
    """The dataset config that reads a gallery of one's own images.

    ``gallery`` is a folder holding one folder per modality
    (``<gallery>/<modality folder>/<file>``, files of a sample paired by
    name) or an annotation CSV (path columns named after the modalities, ids
    optional). The modalities and the test pipeline are the config's; the
    modality folders and the name pattern default to those of the config's
    test dataset when it is a :class:`~mmdmpt.datasets.MultiModalReIDFolder`
    (else the modality names themselves and no ids).

    Args:
        cfg (Config): The model's config.
        gallery (str): A folder or a ``.csv`` file.
        data_root (str, optional): Root of the CSV's relative paths.
            Defaults to None (the CSV's folder).
        modality_dirs (Mapping[str, str], optional): Modality -> folder name.
            Defaults to None (see above).
        name_pattern (str, optional): Regular expression reading ``pid`` (and
            ``camid``) from file names. Defaults to None (see above).

    Returns:
        dict: A ``MultiModalReIDFolder`` config with ``split=None``.

    Raises:
        DataNotFoundError: If ``gallery`` is neither a folder nor a file.
    """
    base = ((cfg.get('test_dataloader') or {}).get('dataset') or {}).copy()
    own = base.get('type') in _FOLDER_TYPES
    if modality_dirs is None and own:
        modality_dirs = base.get('modality_dirs')
    if name_pattern is None and own:
        name_pattern = base.get('name_pattern')
    out = dict(
        type='MultiModalReIDFolder',
        split=None,
        modalities=config_modalities(cfg),
        removal_rule='none',
        pipeline=_test_pipeline_cfg(cfg),
        dataset_name='gallery',
    )
    if osp.isfile(gallery):
        if not gallery.lower().endswith('.csv'):
            raise ConfigError(
                f'--gallery {gallery}: expected a folder of modality folders or a .csv '
                'annotation file'
            )
        path = osp.abspath(gallery)
        out.update(data_root=data_root or osp.dirname(path), ann_file=path)
    elif osp.isdir(gallery):
        out.update(data_root=gallery, modality_dirs=dict(modality_dirs or {}))
        if name_pattern is not None:
            out['name_pattern'] = name_pattern
    else:
        raise DataNotFoundError(
            f'gallery not found: {gallery}; expected a folder holding one folder per modality '
            f'{list(out["modalities"])} or an annotation .csv file'
        )
    return out


def _listing(dataset_cfg: dict, scope: str) -> List[List[Optional[str]]]:
    """The image paths of every gallery sample (no image is read)."""
    cfg = copy.deepcopy(dataset_cfg)
    cfg['pipeline'] = []
    with DefaultScope.overwrite_default_scope(scope):
        dataset = DATASETS.build(cfg)
    return [list(dataset.get_data_info(i)['img_paths']) for i in range(len(dataset))]


def _cache_key(parts: Dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def gallery_features(
    inferencer: ReIDInferencer,
    dataset_cfg: dict,
    checkpoint: Optional[str],
    cache_dir: Optional[str] = DEFAULT_CACHE_DIR,
    batch_size: Optional[int] = None,
    num_workers: Optional[int] = 0,
    progress: bool = True,
) -> Tuple[ReIDFeatures, Dict[str, Any]]:
    """The gallery's features, from the cache when nothing changed.

    The cache file is named by a SHA-256 of: the checkpoint's content, the
    model / preprocessor / pipeline settings, the modalities, the
    normalisation, and the path, size and modification time (ns) of every
    gallery image. Changing any of them extracts again (into a new file).

    Args:
        inferencer (ReIDInferencer): The model.
        dataset_cfg (dict): The gallery's dataset config
            (:func:`gallery_dataset_cfg`).
        checkpoint (str, optional): The checkpoint the inferencer loaded (its
            content is part of the key).
        cache_dir (str, optional): The cache folder; None: no cache.
            Defaults to :data:`DEFAULT_CACHE_DIR`.
        batch_size (int, optional): Extraction batch size. Defaults to None.
        num_workers (int, optional): Dataloader workers. Defaults to 0.
        progress (bool): Show a progress bar while extracting. Defaults to
            True.

    Returns:
        tuple: The features (:class:`~mmdmpt.structures.ReIDFeatures`,
        normalised) and ``info``: ``cache_file`` (or None), ``reused``
        (bool), ``num_samples``.
    """
    scope = _scope(inferencer.cfg)
    listing = _listing(dataset_cfg, scope)
    cache_file = None
    if cache_dir is not None:
        files = []
        for paths in listing:
            for path in paths:
                if path:
                    stat = os.stat(path)
                    files.append([osp.abspath(path), stat.st_size, stat.st_mtime_ns])
        cfg = inferencer.cfg
        parts = dict(
            version=_CACHE_VERSION,
            checkpoint=file_digest(checkpoint) if checkpoint else None,
            model=cfg.get('model'),
            data_preprocessor=cfg.get('data_preprocessor'),
            pipeline=dataset_cfg.get('pipeline'),
            modalities=list(dataset_cfg['modalities']),
            normalize=True,
            files=files,
            layout=listing,
        )
        cache_file = osp.join(cache_dir, f'gallery_{_cache_key(parts)[:24]}.pt')
        if osp.isfile(cache_file):
            features = ReIDFeatures.load(cache_file)
            if [list(p) for p in features['img_paths']] == [
                ['' if p is None else str(p) for p in ps] for ps in listing
            ]:
                print_log(
                    f'Gallery features: {len(listing)} samples read from the cache {cache_file}',
                    logger='current',
                )
                return features, dict(cache_file=cache_file, reused=True, num_samples=len(listing))
    features = extract_dataset_features(
        inferencer,
        copy.deepcopy(dataset_cfg),
        normalize=True,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    features = ReIDFeatures(features)
    # the listing's paths, '' for a modality a sample lacks (the records hold str(None))
    paths = [['' if p is None else str(p) for p in ps] for ps in listing]
    if len(paths) != features.num_samples:
        raise DataError(
            f'the gallery lists {len(paths)} samples but {features.num_samples} were embedded'
        )
    features['img_paths'] = paths
    if cache_file is not None:
        os.makedirs(cache_dir, exist_ok=True)
        features.save(cache_file)
        print_log(
            f'Gallery features: {len(listing)} samples extracted, cached in {cache_file}',
            logger='current',
        )
    return features, dict(cache_file=cache_file, reused=False, num_samples=len(listing))


class ReIDGallery:
    """A searchable gallery of one's own multi-modal images.

    Args:
        model (str | Config): The config (file) of the model.
        weights (str): Its checkpoint.
        gallery (str): A folder of modality folders or an annotation CSV (see
            :func:`gallery_dataset_cfg`).
        data_root (str, optional): Root of a CSV's relative paths. Defaults
            to None (the CSV's folder).
        modality_dirs (Mapping[str, str], optional): Modality -> folder name.
            Defaults to None (the config's custom dataset, else the names).
        name_pattern (str, optional): Reads ids from file names. Defaults to
            None (the config's custom dataset, else no ids).
        cache_dir (str, optional): Gallery feature cache; None: none.
            Defaults to :data:`DEFAULT_CACHE_DIR`.
        threshold (float | str | dict, optional): Match threshold: a distance
            or a calibration (file). Defaults to None (no decision).
        backend (str): ``'torch'`` (exact) or ``'faiss'``. Defaults to
            ``'torch'``.
        index (str): FAISS index ``'flat'`` (exact), ``'ivf'`` or ``'hnsw'``.
            Defaults to ``'flat'``.
        index_options (dict, optional): See
            :class:`~mmdmpt.evaluation.GallerySearcher`. Defaults to None.
        device (str, optional): Defaults to None (CUDA when available).
        cfg_options (dict, optional): Overrides of the config. Defaults to
            None.
        batch_size (int, optional): Extraction batch size. Defaults to None.
        num_workers (int): Dataloader workers. Defaults to 0.
        progress (bool): Progress bar while extracting. Defaults to True.
        inferencer (ReIDInferencer, optional): Use this model instead of
            building one from ``model`` and ``weights``. Defaults to None.

    Examples:
        >>> gallery = ReIDGallery('my_config.py', 'epoch_1.pth', 'data/mine/gallery',
        ...                       threshold='calibration.json')
        >>> results = gallery.search([{'rgb': 'q_rgb.jpg', 'depth': 'q_depth.png'}], k=5)
        >>> results[0]['results'][0]['distance'], results[0]['results'][0]['same_identity']
    """

    def __init__(
        self,
        model: Union[str, Config],
        weights: Optional[str],
        gallery: str,
        data_root: Optional[str] = None,
        modality_dirs: Optional[Mapping[str, str]] = None,
        name_pattern: Optional[str] = None,
        cache_dir: Optional[str] = DEFAULT_CACHE_DIR,
        threshold: Union[None, float, str, Mapping] = None,
        backend: str = 'torch',
        index: str = 'flat',
        index_options: Optional[Dict[str, Any]] = None,
        device: Optional[str] = None,
        cfg_options: Optional[dict] = None,
        batch_size: Optional[int] = None,
        num_workers: int = 0,
        progress: bool = True,
        inferencer: Optional[ReIDInferencer] = None,
    ) -> None:
        if inferencer is None:
            inferencer = ReIDInferencer(model, weights, device=device, cfg_options=cfg_options)
        self.inferencer = inferencer
        options = evaluator_options(inferencer.cfg)
        self.metric = options['metric']
        self.threshold, self.calibration = checkpoint_threshold(threshold, self.metric, weights)
        self.dataset_cfg = gallery_dataset_cfg(
            inferencer.cfg, gallery, data_root, modality_dirs, name_pattern
        )
        self.modalities = tuple(self.dataset_cfg['modalities'])
        self.features, self.cache_info = gallery_features(
            inferencer,
            self.dataset_cfg,
            weights,
            cache_dir,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
        )
        self.searcher = GallerySearcher(
            self.features['feats'],
            self.metric,
            backend=backend,
            index=index,
            index_options=index_options,
        )

    @property
    def num_samples(self) -> int:
        """int: Gallery samples."""
        return int(self.features['feats'].shape[0])

    def _check_queries(self, queries: Sequence[Mapping]) -> List[Mapping]:
        if isinstance(queries, Mapping):
            queries = [queries]
        queries = list(queries)
        if not queries:
            raise ConfigError('no query given: a query is a dict modality -> image')
        for n, query in enumerate(queries):
            if not isinstance(query, Mapping):
                raise ConfigError(f'query {n} is a {type(query).__name__}, not a dict')
            unknown = [m for m in query if m not in self.modalities]
            if unknown:
                raise ConfigError(
                    f'query {n}: unknown modality {unknown}; the model takes '
                    f'{list(self.modalities)} (any subset)'
                )
            for modality, value in query.items():
                if isinstance(value, (str, os.PathLike)) and not osp.isfile(value):
                    raise DataNotFoundError(f'query {n}: {modality} image not found: {value}')
        return queries

    def search(self, queries: Union[Mapping, Sequence[Mapping]], k: int = 10) -> List[dict]:
        """The ``k`` nearest gallery samples of each query.

        Args:
            queries (Mapping | Sequence[Mapping]): Samples ``modality ->
                image path or array`` (any subset of the modalities).
            k (int): Results per query. Defaults to 10.

        Returns:
            list[dict]: Per query: ``query`` (modality -> path, None for an
            array or an absent modality), ``modalities`` (the ones given) and
            ``results``: dicts with ``rank`` (1-based), ``index`` (gallery
            sample), ``distance``, ``img_paths`` (modality -> path or None),
            ``pid`` / ``camid`` (None when unknown) and ``same_identity``
            (True / False with a threshold, else None).
        """
        queries = self._check_queries(queries)
        feats = self.inferencer(queries, normalize=True)
        result = self.searcher.search(feats, k)
        out = []
        for query, row_i, row_d in zip(queries, result.indices.tolist(), result.distances.tolist()):
            entries = []
            for rank, (j, dist) in enumerate(zip(row_i, row_d), 1):
                if j < 0:
                    continue
                pid = int(self.features['pids'][j])
                camid = int(self.features['camids'][j])
                paths = self.features['img_paths'][j]
                entries.append(
                    dict(
                        rank=rank,
                        index=int(j),
                        distance=float(dist),
                        img_paths={m: (p or None) for m, p in zip(self.modalities, paths)},
                        pid=pid if pid >= 0 else None,
                        camid=camid if camid >= 0 else None,
                        same_identity=None if self.threshold is None else dist <= self.threshold,
                    )
                )
            out.append(
                dict(
                    query={
                        m: (
                            os.fspath(query[m])
                            if isinstance(query.get(m), (str, os.PathLike))
                            else None
                        )
                        for m in self.modalities
                    },
                    modalities=[m for m in self.modalities if query.get(m) is not None],
                    results=entries,
                )
            )
        return out

    def _query_images(self, query: Mapping) -> List[Optional[np.ndarray]]:
        images = []
        for modality in self.modalities:
            value = query.get(modality)
            if value is None:
                images.append(None)
            elif isinstance(value, np.ndarray):
                images.append(value)
            else:
                info = dict(img_paths=[os.fspath(value)], modalities=(modality,))
                images.append(load_sample_images(info)[0])
        return images

    def draw(
        self,
        queries: Union[Mapping, Sequence[Mapping]],
        results: Sequence[dict],
        out_dir: str,
        tile_size: Optional[Tuple[int, int]] = None,
    ) -> List[str]:
        """Rank-list pictures of the results (one PNG per query).

        Frames: blue the query; with a threshold green for results judged
        the same identity and red for the others (without a threshold every
        result is framed red: no judgement is made).

        Args:
            queries (Mapping | Sequence[Mapping]): The queries searched.
            results (Sequence[dict]): :meth:`search`'s output.
            out_dir (str): Folder for ``query{n:03d}.png``.
            tile_size (tuple[int, int], optional): ``(h, w)`` of one image.
                Defaults to None (by the images).

        Returns:
            list[str]: The files written.
        """
        queries = self._check_queries(queries)
        if self.threshold is None:
            legend = ['frame: blue = query; no threshold given: results are not judged (grey)']
        else:
            legend = [
                f'frame: blue = query, green = judged the same identity (distance <= '
                f'{self.threshold:.4f}), red = judged another identity'
            ]
        if any(e['pid'] is None for found in results for e in found['results']):
            legend.append('id -1: the gallery gives no identity')
        written = []
        for n, (query, found) in enumerate(zip(queries, results)):
            entries = []
            for entry in found['results']:
                paths = [entry['img_paths'][m] or '' for m in self.modalities]
                info = dict(img_paths=paths, modalities=self.modalities)
                judged = entry.get('same_identity')
                same = None if self.threshold is None or judged is None else bool(judged)
                pid = -1 if entry['pid'] is None else entry['pid']
                entries.append((load_sample_images(info), same, entry['distance'], pid))
            title = (
                f'query {n} ({", ".join(found["modalities"])}): top-{len(entries)} of '
                f'{self.num_samples} gallery samples ({self.metric})'
            )
            image = draw_rank_list(
                self._query_images(query),
                entries,
                modalities=self.modalities,
                tile_size=tile_size,
                title=title,
                legend=legend,
            )
            written.append(save_image(image, osp.join(out_dir, f'query{n:03d}.png')))
        return written


def calibrate_on_features(
    features: Mapping[str, Any],
    target_fmr: float = 0.01,
    metric: str = 'cosine',
    feat_norm: bool = True,
    removal_rule: Optional[str] = None,
    num_points: int = 512,
) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Calibrate a match threshold on the query-gallery pairs of a split.

    Args:
        features (Mapping): A features dict of a split with queries and
            gallery (e.g. the held-out ``'val'`` split).
        target_fmr (float): False match rate allowed. Defaults to 0.01.
        metric (str): ``'cosine'`` or ``'euclidean'``. Defaults to
            ``'cosine'``.
        feat_norm (bool): L2-normalise the features first (as the metric).
            Defaults to True.
        removal_rule (str, optional): Pairs hidden from the evaluation are
            left out: ``'camera'``, ``'scene'`` or ``'none'``. Defaults to
            None (scenes when the features have them, else cameras).
        num_points (int): Points of the curve. Defaults to 512.

    Returns:
        tuple: The calibration (see
        :func:`~mmdmpt.evaluation.functional.calibrate_threshold`, plus
        ``metric``, ``feat_norm``, ``removal_rule``, ``num_ids``,
        ``num_queries``, ``num_gallery``) and the curve
        (:func:`~mmdmpt.evaluation.functional.roc_points`).
    """
    query, gallery = ReIDFeatures(features).split()
    if query.num_samples == 0 or gallery.num_samples == 0:
        raise DataError(
            f'calibration needs query and gallery samples, got {query.num_samples} and '
            f"{gallery.num_samples}; use a split with both ('val' or 'test')"
        )
    rule = removal_rule or ('scene' if features['has_scenes'] else 'camera')
    q_feats, g_feats = query['feats'].float(), gallery['feats'].float()
    if feat_norm:
        q_feats = torch.nn.functional.normalize(q_feats, dim=1)
        g_feats = torch.nn.functional.normalize(g_feats, dim=1)
    groups = dict(camera='camids', scene='sceneids').get(rule)
    match_d, nonmatch_d = pair_distances(
        q_feats,
        g_feats,
        query['pids'],
        gallery['pids'],
        query[groups] if groups else None,
        gallery[groups] if groups else None,
        metric=metric,
    )
    calibration = calibrate_threshold(match_d, nonmatch_d, target_fmr)
    ids = set(query['pids'].tolist()) | set(gallery['pids'].tolist())
    calibration.update(
        metric=metric,
        feat_norm=bool(feat_norm),
        removal_rule=rule,
        removal_rule_words=removal_rule_name(rule),
        num_ids=len(ids),
        num_queries=query.num_samples,
        num_gallery=gallery.num_samples,
    )
    return calibration, roc_points(match_d, nonmatch_d, num_points)
