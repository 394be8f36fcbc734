"""Embeddings of multi-modal samples from a config and a checkpoint."""

import copy
import hashlib
import logging
import os
import os.path as osp
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose, default_collate
from mmengine.dist import get_dist_info
from mmengine.fileio import get as fileio_get
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader, Dataset

from mmdmpt.datasets.transforms.loading import (
    LOADER_TYPES,
    decode_bgr,
    set_missing_in_pipeline,
)
from mmdmpt.engine.config_check import check_cfg_options
from mmdmpt.engine.launch import load_config
from mmdmpt.engine.prepare import fill_data_settings, prepare_config
from mmdmpt.evaluation.functional import compute_distance, resolve_threshold
from mmdmpt.registry import MODELS
from mmdmpt.structures import MODALITIES, ReIDFeatures, parse_missing, sample_record
from mmdmpt.utils.checkpoint import check_checkpoint_file, load_model_weights, read_checkpoint
from mmdmpt.utils.errors import CheckpointError, ConfigError, DataError, DataNotFoundError

__all__ = [
    'ReIDInferencer',
    'evaluator_options',
    'file_digest',
    'build_reid_model',
    'load_reid_checkpoint',
    'extract_dataset_features',
]


ImageInput = Union[str, os.PathLike, np.ndarray, None]
SampleInput = Mapping


def _scope(cfg: Config) -> str:
    return cfg.get('default_scope', None) or 'mmdmpt'


def _to_config(model: Union[str, os.PathLike, Config, dict]) -> Config:
    if isinstance(model, (str, os.PathLike)):
        return load_config(os.fspath(model))
    if isinstance(model, Config):
        cfg = copy.deepcopy(model)
    elif isinstance(model, dict):
        cfg = Config(copy.deepcopy(model))
    else:
        raise TypeError(f'model must be a config file path or a Config, got {type(model).__name__}')
    fill_data_settings(cfg)
    return cfg


def load_reid_checkpoint(
    model: torch.nn.Module,
    filename: str,
    map_location: Union[str, torch.device] = 'cpu',
    model_cfg: Optional[Mapping] = None,
) -> Dict[str, Any]:
    """Load a mmdmpt checkpoint (full or trainable-only) into ``model``.

    The same reader and the same rules as ``tools/test.py``
    (:mod:`mmdmpt.utils.checkpoint`): pickled code never runs, a file that is
    not a checkpoint is refused by name, and the tensors must fit the model
    (a different ID classifier is skipped with one log line: features do not
    use it). A *trainable-only* checkpoint lacks the frozen CLIP weights: the
    model keeps the values it was built with, so its backbone's
    ``pretrained`` must point to the same CLIP file as in training.

    Args:
        model (nn.Module): The model, e.g. a :class:`MultiModalReID`.
        filename (str): The checkpoint file.
        map_location (str | torch.device): Passed to ``torch.load``.
            Defaults to ``'cpu'``.
        model_cfg (Mapping, optional): The config's ``model``, to name the
            settings that differ from the checkpoint's training config.
            Defaults to None.

    Returns:
        dict: ``meta`` (the checkpoint's meta dict, or ``{}``),
        ``trainable_only`` (bool) and ``num_keys`` (tensors loaded).

    Raises:
        CheckpointError: If the file is missing, unsafe, not a checkpoint, or
            its tensors do not fit the model.
    """
    checkpoint = read_checkpoint(filename, map_location=map_location)
    info = load_model_weights(model, checkpoint, filename, model_cfg=model_cfg, for_test=True)
    meta = checkpoint.get('meta', {}) if 'state_dict' in checkpoint else {}
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    print_log(
        f'Loaded {"trainable-only " if info["trainable_only"] else ""}checkpoint {filename} '
        f'({info["num_loaded"]} tensors).',
        logger='current',
    )
    return dict(meta=meta, trainable_only=info['trainable_only'], num_keys=info['num_loaded'])


def build_reid_model(cfg: Config, weights: Optional[str] = None) -> torch.nn.Module:
    """Build ``cfg.model`` and load ``weights``, as ``tools/test.py`` would.

    The config is prepared as the Runner prepares it
    (:func:`mmdmpt.engine.prepare.prepare_config`: key checks,
    ``num_classes='auto'`` from the checkpoint). The config's top-level
    ``data_preprocessor`` is used when the model config has none. The
    checkpoint file is checked before anything is built. When ``weights`` is
    given and the backbone's ``pretrained`` CLIP file does not exist, the
    model is built with random CLIP weights and every weight must then come
    from the checkpoint: this works for full checkpoints; a trainable-only
    checkpoint is refused, naming the missing CLIP file.

    Args:
        cfg (Config): A config with ``model``.
        weights (str, optional): Checkpoint file. Defaults to None (no
            weights are loaded: the prompts and head keep their random
            initialisation, with a warning).

    Returns:
        nn.Module: The model in eval mode, on the CPU.

    Raises:
        CheckpointError: See :func:`load_reid_checkpoint`.
        ConfigError: On a misspelled config key.
    """
    checkpoint = None
    if weights is not None:
        check_checkpoint_file(weights)
        checkpoint = read_checkpoint(weights, mmap=True)
    cfg = copy.deepcopy(cfg)
    for name in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        if name in cfg:
            cfg[name] = None  # inference only: nothing of training is needed
    prepare_config(cfg, checkpoint)
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None and model_cfg.get('data_preprocessor') is None:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    backbone = model_cfg.get('backbone', None)
    pretrained = backbone.get('pretrained') if isinstance(backbone, Mapping) else None
    if weights is not None and isinstance(pretrained, str) and not osp.isfile(pretrained):
        state = checkpoint.get('state_dict', checkpoint) if checkpoint is not None else {}
        visual = ('backbone.visual.', 'module.backbone.visual.')
        if not any(str(k).startswith(visual) for k in state):
            raise CheckpointError(
                f'{weights} is a trainable-only checkpoint (no frozen CLIP weights) but the CLIP '
                f'file {pretrained} (model.backbone.pretrained) does not exist: set '
                'model.backbone.pretrained to the CLIP file used in training (e.g. --cfg-options '
                'model.backbone.pretrained=checkpoints/ViT-B-16.pt).'
            )
        print_log(
            f'The CLIP file {pretrained} (model.backbone.pretrained) does not exist: building '
            f'with random CLIP weights; every weight must come from {weights}.',
            logger='current',
            level=logging.WARNING,
        )
        backbone['pretrained'] = None
    with DefaultScope.overwrite_default_scope(_scope(cfg)):
        model = MODELS.build(model_cfg)
    if weights is None:
        print_log(
            'No checkpoint given: the trainable weights (prompts, head) are randomly initialised.',
            logger='current',
            level=logging.WARNING,
        )
    else:
        load_reid_checkpoint(model, weights, model_cfg=cfg.model)
    return model.eval()


def _test_pipeline_cfg(cfg: Config) -> List[dict]:
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if isinstance(loader, Mapping):
            pipeline = loader.get('dataset', {}).get('pipeline')
            if pipeline:
                return list(pipeline)
    if cfg.get('test_pipeline'):
        return list(cfg.test_pipeline)
    raise ConfigError(
        'The config has no test pipeline: expected test_dataloader.dataset.pipeline '
        '(or test_pipeline).'
    )


def _is_loader(transform: Any) -> bool:
    if isinstance(transform, Mapping):
        return transform.get('type') in LOADER_TYPES
    return type(transform).__name__ == 'LoadMultiModalImages'


def _loader_backend_args(pipeline: Sequence[Any]) -> Optional[dict]:
    for transform in pipeline:
        if _is_loader(transform) and isinstance(transform, Mapping):
            return transform.get('backend_args')
    return None


def file_digest(path: str) -> str:
    """SHA-256 of a file's content (hex).

    Args:
        path (str): The file.

    Returns:
        str: The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def evaluator_options(cfg: Config) -> Dict[str, Any]:
    """The distance (``metric``) and ``feat_norm`` of the config's test metric.

    Args:
        cfg (Config): A config (its ``test_evaluator``, else defaults).

    Returns:
        dict: ``metric`` (default ``'cosine'``) and ``feat_norm`` (default
        True).
    """
    evaluator = cfg.get('test_evaluator') or {}
    if isinstance(evaluator, (list, tuple)):
        evaluator = evaluator[0] if evaluator else {}
    if not isinstance(evaluator, Mapping):
        evaluator = {}
    return dict(
        metric=evaluator.get('metric', 'cosine'), feat_norm=bool(evaluator.get('feat_norm', True))
    )


def checkpoint_threshold(
    threshold: Any, metric: str, weights: Optional[str]
) -> Tuple[Optional[float], Optional[Dict[str, Any]]]:
    """:func:`~mmdmpt.evaluation.functional.resolve_threshold`, warning on another checkpoint.

    A calibration records the SHA-256 of the checkpoint it was made with;
    when ``weights`` is another file, its threshold may not fit these
    features: said once, as a warning.

    Args:
        threshold: A number, a calibration file or dict, or None.
        metric (str): The distance of the features.
        weights (str, optional): The checkpoint in use.

    Returns:
        tuple: ``(threshold, calibration)`` as ``resolve_threshold`` gives them.
    """
    value, calibration = resolve_threshold(threshold, metric)
    recorded = (calibration or {}).get('checkpoint_sha256')
    if recorded and weights and recorded != file_digest(weights):
        print_log(
            f'The calibration was made with another checkpoint '
            f'({calibration.get("checkpoint")}) than {weights}: its threshold may '
            'not fit these features; calibrate this checkpoint.',
            logger='current',
            level=logging.WARNING,
        )
    return value, calibration


class ReIDInferencer:
    """Embeddings of multi-modal samples with any subset of modalities.

    Builds the model of a config, loads a checkpoint and turns samples into
    test features the way the test loop does: the config's test pipeline
    (without its image loader; e.g. the resize), the model's data
    preprocessor and ``model(..., mode='tensor')`` with the sample's
    ``modality_mask``.

    A sample is a dict ``modality -> image``: an image file path, or an
    ``HxWx3`` (RGB order) / ``HxW`` (grey) ``uint8`` array. Missing keys (or
    ``None`` values) are absent modalities: their images are zero, their
    mask False and their slice of the feature zero. At least one modality
    must be present.

    Checkpoints load with ``torch.load(weights_only=True)``. Full checkpoints
    carry every weight. Trainable-only checkpoints
    (``SafeCheckpointHook(trainable_only=True)``) carry only the prompts,
    mappings and head: **the config's ``model.backbone.pretrained`` must then
    point to the CLIP file used in training**, whose frozen weights the model
    keeps.

    Args:
        model (str | Config): A config file or a config (with ``model`` and a
            test pipeline in ``test_dataloader.dataset.pipeline``).
        weights (str, optional): Checkpoint file. Defaults to None (random
            prompts and head, with a warning).
        device (str | torch.device, optional): Defaults to None: ``'cuda'``
            when available, else ``'cpu'``.
        cfg_options (dict, optional): Overrides merged into the config (as
            ``--cfg-options``). Defaults to None.
        normalize (bool): L2-normalise the features. Defaults to True.
        threshold (float | str | dict, optional): The match threshold of
            :meth:`compare`: a distance, or a calibration file of
            ``tools/analysis_tools/calibrate_threshold.py`` (or its loaded
            dict); a pair is judged the same identity when its distance is at
            most the threshold. Defaults to None (no decision).

    Examples:
        >>> inferencer = ReIDInferencer('configs/dmpt/dmpt_vitb_rgbnt201.py', 'epoch_60.pth')
        >>> feats = inferencer([{'rgb': 'a_rgb.jpg', 'tir': 'a_tir.jpg'}])  # NIR absent
        >>> feats.shape  # (1, 3 * 768), the NIR slice zero
        >>> inferencer = ReIDInferencer(cfg, 'epoch_60.pth', threshold='calibration.json')
        >>> inferencer.compare({'rgb': 'a.jpg'}, {'rgb': 'b.jpg', 'tir': 'b_t.jpg'})
        {'distance': 0.21, 'same_identity': True, 'threshold': 0.3}
    """

    def __init__(
        self,
        model: Union[str, Config],
        weights: Optional[str] = None,
        device: Optional[Union[str, torch.device]] = None,
        cfg_options: Optional[dict] = None,
        normalize: bool = True,
        threshold: Union[None, float, str, Mapping] = None,
    ) -> None:
        cfg = _to_config(model)
        if cfg_options:
            check_cfg_options(cfg, cfg_options)
            cfg.merge_from_dict(cfg_options)
        self.cfg = cfg
        self.normalize = bool(normalize)
        self.metric = evaluator_options(cfg)['metric']
        self.threshold, self.calibration = checkpoint_threshold(threshold, self.metric, weights)
        self.model = build_reid_model(cfg, weights)
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.modalities = self._modalities()
        pipeline_cfg = _test_pipeline_cfg(cfg)
        self.backend_args = _loader_backend_args(pipeline_cfg)
        with DefaultScope.overwrite_default_scope(_scope(cfg)):
            self.pipeline = Compose([t for t in pipeline_cfg if not _is_loader(t)])

    def _modalities(self) -> tuple:
        backbone = getattr(self.model, 'backbone', None)
        mods = getattr(backbone, 'modalities', None)
        if mods is None:
            mods = self.cfg.get('test_dataloader', {}).get('dataset', {}).get('modalities')
        return tuple(mods) if mods else MODALITIES

    # ----------------------------------------------------------- inputs
    def _read(self, path: Union[str, os.PathLike], modality: str) -> np.ndarray:
        path = os.fspath(path)
        if self.backend_args is None and not osp.isfile(path):
            raise DataNotFoundError(f'{modality} image file not found: {path}')
        buf = fileio_get(path, backend_args=self.backend_args)
        return cv2.cvtColor(decode_bgr(buf, path), cv2.COLOR_BGR2RGB)

    @staticmethod
    def _check_array(img: np.ndarray, modality: str) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f'{modality} image must be uint8, got {img.dtype}')
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            return np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2))
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'{modality} image must be HxWx3 (RGB) or HxW, got shape {img.shape}')
        return np.ascontiguousarray(img)

    def preprocess(self, sample: SampleInput) -> dict:
        """Run one sample through the test pipeline.

        Args:
            sample (Mapping): ``modality -> path or array`` (see the class
                docstring).

        Returns:
            dict: ``inputs`` (uint8 ``(M, 3, H, W)``) and ``data_samples``.

        Raises:
            ValueError: On an unknown modality name, no modality present or
                a badly shaped array.
            TypeError: On an input that is neither a path nor an array.
        """
        if not isinstance(sample, Mapping):
            raise TypeError(
                f'a sample must be a dict modality -> image path or array, got '
                f'{type(sample).__name__}'
            )
        unknown = [k for k in sample if k not in self.modalities]
        if unknown:
            raise ConfigError(
                f'unknown modality {unknown}: the model takes {list(self.modalities)}'
            )
        imgs: List[Optional[np.ndarray]] = []
        paths: List[Optional[str]] = []
        for modality in self.modalities:
            value = sample.get(modality)
            if value is None:
                imgs.append(None)
                paths.append(None)
            elif isinstance(value, (str, os.PathLike)):
                imgs.append(self._read(value, modality))
                paths.append(os.fspath(value))
            elif isinstance(value, np.ndarray):
                imgs.append(self._check_array(value, modality))
                paths.append(None)
            else:
                raise TypeError(
                    f'{modality}: expected an image path or a uint8 array, got '
                    f'{type(value).__name__}'
                )
        present = [img for img in imgs if img is not None]
        if not present:
            raise DataError(
                f'a sample needs at least one of the modalities {list(self.modalities)}'
            )
        shape = present[0].shape
        mask = np.array([img is not None for img in imgs], dtype=bool)
        imgs = [img if img is not None else np.zeros(shape, np.uint8) for img in imgs]
        shapes = [img.shape[:2] for img in imgs]
        results = dict(
            imgs=imgs,
            modality_mask=mask,
            modalities=self.modalities,
            img_paths=paths,
            ori_shapes=shapes,
            img_shapes=list(shapes),
            img_shape=shapes[0],
        )
        return self.pipeline(results)

    # ---------------------------------------------------------- forward
    @torch.no_grad()
    def forward_batch(self, batch: dict) -> torch.Tensor:
        """Features of a collated batch (``inputs`` + ``data_samples``).

        Args:
            batch (dict): The output of ``default_collate`` on packed samples.

        Returns:
            torch.Tensor: ``(N, M*D)`` float32 features on the CPU (not
            normalised).
        """
        data = self.model.data_preprocessor(batch, False)
        feats = self.model(data['inputs'], data['data_samples'], mode='tensor')
        return feats.float().cpu()

    def __call__(
        self,
        inputs: Union[SampleInput, Sequence[SampleInput]],
        batch_size: int = 8,
        normalize: Optional[bool] = None,
        return_numpy: bool = False,
        progress: bool = False,
    ) -> Union[torch.Tensor, np.ndarray]:
        """Embed one sample or a list of samples.

        Args:
            inputs (Mapping | Sequence[Mapping]): Samples (see the class
                docstring); a single dict counts as a list of one.
            batch_size (int): Samples per forward pass. Defaults to 8.
            normalize (bool, optional): L2-normalise; None uses the
                inferencer's ``normalize``. Defaults to None.
            return_numpy (bool): Return a NumPy array. Defaults to False.
            progress (bool): Show a progress bar. Defaults to False.

        Returns:
            torch.Tensor | np.ndarray: ``(N, M*D)`` float32 features in
            modality order (``self.modalities``); absent modalities' slices
            are zero.
        """
        if isinstance(inputs, Mapping):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            raise ValueError('no samples given')
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f'batch_size must be a positive int, got {batch_size!r}')
        normalize = self.normalize if normalize is None else normalize
        bar = ProgressBar(len(inputs)) if progress and get_dist_info()[0] == 0 else None
        chunks = []
        for start in range(0, len(inputs), batch_size):
            packed = [self.preprocess(s) for s in inputs[start : start + batch_size]]
            chunks.append(self.forward_batch(default_collate(packed)))
            if bar is not None:
                bar.update(len(packed))
        feats = torch.cat(chunks)
        if normalize:
            feats = F.normalize(feats, dim=1)
        return feats.numpy() if return_numpy else feats

    def compare(
        self,
        sample_a: SampleInput,
        sample_b: SampleInput,
        threshold: Union[None, float, str, Mapping] = None,
    ) -> Dict[str, Any]:
        """The distance of two samples and, with a threshold, the decision.

        Args:
            sample_a (Mapping): A sample (``modality -> path or array``).
            sample_b (Mapping): Another sample.
            threshold (float | str | dict, optional): Overrides the
                inferencer's threshold for this call. Defaults to None.

        Returns:
            dict: ``distance`` (float, the config's test metric on normalised
            features), ``threshold`` (float or None) and ``same_identity``
            (``distance <= threshold``, or None without a threshold).
        """
        value = self.threshold
        if threshold is not None:
            value, _ = resolve_threshold(threshold, self.metric)
        feats = self([sample_a, sample_b], normalize=True)
        distance = float(compute_distance(feats[:1], feats[1:], self.metric)[0, 0])
        same = None if value is None else bool(distance <= value)
        return dict(distance=distance, threshold=value, same_identity=same)


# --------------------------------------------------------------------------
# Whole datasets
# --------------------------------------------------------------------------
def _build_loader(
    data: Union[DataLoader, Dataset, Mapping],
    cfg: Optional[Config],
    missing: Union[None, str, Sequence[str]],
    batch_size: Optional[int],
    num_workers: Optional[int],
) -> DataLoader:
    if isinstance(data, DataLoader):
        if missing:
            raise ValueError('missing needs a dataloader or dataset config dict, not a DataLoader')
        return data
    if isinstance(data, Dataset):
        if missing:
            raise ValueError('missing needs a dataloader or dataset config dict, not a dataset')
        return DataLoader(
            data,
            batch_size=batch_size or 32,
            shuffle=False,
            num_workers=num_workers or 0,
            collate_fn=default_collate,
        )
    if not isinstance(data, Mapping):
        raise TypeError(
            'data must be a DataLoader, a dataset, or a dataloader / dataset config dict, '
            f'got {type(data).__name__}'
        )
    loader_cfg = copy.deepcopy(dict(data))
    if 'dataset' not in loader_cfg:  # a dataset config
        loader_cfg = dict(
            batch_size=32,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            dataset=loader_cfg,
        )
    if missing:
        modalities = loader_cfg['dataset'].get('modalities', MODALITIES)
        names = parse_missing(missing, modalities)
        if len(names) != 1:
            raise ValueError('missing="all" is not supported here; name the modalities to drop')
        loader_cfg = set_missing_in_pipeline(loader_cfg, names[0])
    if batch_size is not None:
        loader_cfg['batch_size'] = batch_size
    if num_workers is not None:
        loader_cfg['num_workers'] = num_workers
    if not loader_cfg.get('num_workers'):
        loader_cfg.pop('persistent_workers', None)
    from mmengine.runner import Runner

    scope = cfg.get('default_scope', 'mmdmpt') if cfg is not None else 'mmdmpt'
    with DefaultScope.overwrite_default_scope(scope or 'mmdmpt'):
        return Runner.build_dataloader(loader_cfg)


@torch.no_grad()
def extract_dataset_features(
    model: Union[ReIDInferencer, BaseModel],
    data: Union[DataLoader, Dataset, Mapping, None] = None,
    missing: Union[None, str, Sequence[str]] = None,
    normalize: bool = True,
    batch_size: Optional[int] = None,
    num_workers: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Test features and metadata of every sample of a dataset.

    Runs in the calling process over the whole loader (a tool, not a
    distributed job; in a distributed run each process would see only its
    sampler's shard). The progress bar is shown on rank 0 only.

    Args:
        model (ReIDInferencer | BaseModel): An inferencer, or a model with a
            data preprocessor and a ``'tensor'`` forward mode (on its device,
            in eval mode).
        data (DataLoader | Dataset | Mapping, optional): A dataloader, a
            dataset, a dataloader config (with ``dataset``) or a dataset
            config. Defaults to None: the inferencer config's
            ``test_dataloader``.
        missing (str | Sequence[str], optional): Modalities to leave out
            (configs only: sets ``LoadMultiModalImages(missing_modalities=)``
            in the pipeline). Defaults to None.
        normalize (bool): L2-normalise the features. Defaults to True.
        batch_size (int, optional): Override the loader's batch size (configs
            and datasets). Defaults to None.
        num_workers (int, optional): Override the loader's workers (configs
            and datasets). Defaults to None.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        ReIDFeatures: A features dict (see :mod:`mmdmpt.structures.reid_features`): ``feats``,
        ``pids``, ``camids``, ``sceneids``, ``is_query``, ``sample_idx``,
        ``modality_mask``, ``img_paths``, ``modalities``, ``has_scenes``,
        ``normalized``, ``missing`` and ``dataset_name``.
    """
    cfg = None
    if isinstance(model, ReIDInferencer):
        cfg = model.cfg
        net = model.model
    elif isinstance(model, BaseModel):
        net = model
    else:
        raise TypeError(
            f'model must be a ReIDInferencer or a BaseModel, got {type(model).__name__}'
        )
    if data is None:
        if cfg is None or cfg.get('test_dataloader') is None:
            raise ConfigError('data is None and there is no config test_dataloader to use')
        data = cfg.test_dataloader
    loader = _build_loader(data, cfg, missing, batch_size, num_workers)
    dataset = loader.dataset
    metainfo = getattr(dataset, 'metainfo', {}) or {}
    net.eval()
    bar = ProgressBar(len(dataset)) if progress and get_dist_info()[0] == 0 else None
    records = []
    modalities = None
    for batch in loader:
        processed = net.data_preprocessor(batch, False)
        samples = processed['data_samples']
        out = net(processed['inputs'], samples, mode='tensor')
        for sample, feature in zip(samples, out):
            sample.set_field(feature, 'pred_feature', field_type='data')
            records.append(sample_record(sample))
            if modalities is None and sample.get('modalities', None) is not None:
                modalities = [str(m) for m in sample.modalities]
        if bar is not None:
            bar.update(len(samples))
    if bar is not None:
        bar.file.write('\n')  # end the progress bar line
        bar.file.flush()
    if not records:
        raise DataError('the dataset is empty')
    if modalities is None and metainfo.get('modalities'):
        modalities = list(metainfo['modalities'])
    if missing is None:
        missing_list: List[str] = []
    elif isinstance(missing, str):
        missing_list = [m.strip() for m in missing.split(',') if m.strip()]
    else:
        missing_list = list(missing)
    features = ReIDFeatures.from_records(
        records,
        modalities,
        missing=missing_list,
        dataset_name=str(metainfo.get('dataset_name', '')),
        removal_rule=metainfo.get('removal_rule'),
    )
    if normalize:
        features['feats'] = F.normalize(features['feats'], dim=1)
        features['normalized'] = True
    return features
