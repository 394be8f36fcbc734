"""The model index of mmdmpt and mmpretrain-style entry points to it.

``model-index.yml`` (the ``modelindex`` format of OpenMMLab packages) imports
``configs/dmpt/metafile.yml`` and ``configs/baselines/metafile.yml``; each
model is named after its config file (``dmpt_vitb_rgbnt201``,
``clip_vitb_fullft_rgbnt201``, ``dmpt_vit-tiny_synthetic``). The index is read
from the package's ``.mim`` folder when mmdmpt is installed from a wheel, or
from the repository root in a source checkout (editable install).

:func:`list_models`, :func:`get_model`, :func:`init_model` and
:func:`inference_model` follow their mmpretrain namesakes
(``mmpretrain.apis.model``). Differences: nothing is ever downloaded
(``Weights`` are local paths, relative to the current directory), models are
built and loaded as ``tools/test.py`` does (:func:`build_reid_model`: strict
loading, ``num_classes='auto'`` from the checkpoint), and asking for
pre-defined weights that do not exist is an error, not a warning.
"""

import copy
import fnmatch
import os
import os.path as osp
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope

from mmdmpt.engine.config_check import closest
from mmdmpt.engine.launch import load_config
from mmdmpt.utils.errors import CheckpointError, ConfigError

from .inference import (
    ReIDInferencer,
    _is_loader,
    _loader_backend_args,
    _scope,
    _test_pipeline_cfg,
    build_reid_model,
)

__all__ = [
    'ModelHub',
    'model_index_path',
    'list_models',
    'get_model',
    'init_model',
    'inference_model',
]

#: The file name of the root model index.
MODEL_INDEX = 'model-index.yml'


def model_index_path() -> str:
    """The root model index of the installed mmdmpt.

    In a source checkout (the package folder next to ``setup.py`` and
    ``model-index.yml``, as with ``pip install -e .``) the checkout's file;
    otherwise the copy installed in the package's ``.mim`` folder.

    Returns:
        str: The absolute path of ``model-index.yml``.

    Raises:
        FileNotFoundError: If neither exists (a broken install).
    """
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    checkout = osp.dirname(package)
    candidates = []
    if osp.isfile(osp.join(checkout, 'setup.py')):
        candidates.append(osp.join(checkout, MODEL_INDEX))
    candidates.append(osp.join(package, '.mim', MODEL_INDEX))
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'mmdmpt model index not found (looked for {" and ".join(candidates)}); reinstall '
        'mmdmpt from a wheel or use a source checkout.'
    )


class ModelHub:
    """The meta information of every model in the model index, by name.

    Names are case-insensitive. mmdmpt's own index is registered on first
    use; :meth:`register_model_index` adds another one (e.g. a project's own
    metafiles).
    """

    _models_dict: Dict[str, Any] = {}
    _registered = False

    @classmethod
    def register_model_index(
        cls, model_index_path: Union[str, os.PathLike], config_prefix: Optional[str] = None
    ) -> None:
        """Parse a model-index file and register its models.

        Args:
            model_index_path (str | PathLike): The ``model-index.yml`` (or a
                metafile) to read.
            config_prefix (str, optional): The folder that the ``Config``
                paths are relative to. Defaults to None: the folder of the
                file that lists the model.

        Raises:
            ConfigError: If a name is already registered by another entry.
        """
        from modelindex.load_model_index import load

        index = load(os.fspath(model_index_path))
        index.build_models_with_collections()
        for meta in index.models:
            name = meta.name.lower()
            if name in cls._models_dict:
                raise ConfigError(
                    f'model name {meta.name} is listed twice: in {osp.abspath(meta.filepath)} '
                    f'and {osp.abspath(cls._models_dict[name].filepath)}.'
                )
            meta.config = cls._expand_config_path(meta, config_prefix)
            cls._models_dict[name] = meta

    @staticmethod
    def _expand_config_path(meta: Any, config_prefix: Optional[str]) -> Optional[str]:
        if meta.config is None or osp.isabs(meta.config):
            return meta.config
        prefix = config_prefix if config_prefix is not None else osp.dirname(meta.filepath)
        return osp.abspath(osp.join(prefix, meta.config))

    @classmethod
    def _register_mmdmpt_models(cls) -> None:
        if not cls._registered:
            path = model_index_path()
            cls.register_model_index(path, config_prefix=osp.dirname(path))
            cls._registered = True

    @classmethod
    def get(cls, model_name: str) -> Any:
        """The meta information of one model, its config loaded.

        Args:
            model_name (str): A name from :func:`list_models`.

        Returns:
            modelindex.models.Model.Model: A copy whose ``config`` is an
            ``mmengine.Config`` and ``weights`` the metafile's ``Weights``
            (or None).

        Raises:
            ConfigError: If no model has that name.
        """
        cls._register_mmdmpt_models()
        meta = copy.deepcopy(cls._models_dict.get(model_name.lower()))
        if meta is None:
            close = closest(model_name.lower(), cls._models_dict)
            raise ConfigError(
                f'no model named {model_name!r} in the model index'
                + (f' (did you mean {close!r}?)' if close else '')
                + '; mmdmpt.apis.list_models() lists them.'
            )
        if isinstance(meta.config, str):
            meta.config = load_config(meta.config)
        return meta

    @classmethod
    def has(cls, model_name: str) -> bool:
        """Whether a model name is in the index."""
        cls._register_mmdmpt_models()
        return model_name.lower() in cls._models_dict


def list_models(
    pattern: Optional[str] = None,
    exclude_patterns: Optional[Sequence[str]] = None,
    task: Optional[str] = None,
) -> List[str]:
    """The names of the models in mmdmpt's model index.

    Args:
        pattern (str, optional): A wildcard pattern; names matching it with
            any suffix are kept (``'dmpt_vitb'`` matches every ViT-B DMPT
            config). Defaults to None (all).
        exclude_patterns (Sequence[str], optional): Wildcard patterns (any
            suffix) of names to drop. Defaults to None.
        task (str, optional): Keep models with a result of this task, e.g.
            ``'Multi-modal Object Re-identification'``; ``'null'`` keeps
            models without results. Defaults to None.

    Returns:
        list[str]: Sorted model names.

    Examples:
        >>> from mmdmpt.apis import list_models
        >>> list_models('dmpt_vitb_rgbnt')
        ['dmpt_vitb_rgbnt100', 'dmpt_vitb_rgbnt201', 'dmpt_vitb_rgbnt201_val10']
    """
    ModelHub._register_mmdmpt_models()
    matches = set(ModelHub._models_dict)
    if pattern is not None:
        matches = set(fnmatch.filter(matches, pattern.lower() + '*'))
    for exclude in exclude_patterns or []:
        matches -= set(fnmatch.filter(matches, exclude.lower() + '*'))
    if task is not None:
        kept = set()
        for name in matches:
            results = ModelHub._models_dict[name].results
            if results is None:
                if task == 'null':
                    kept.add(name)
            elif task in [result.task for result in results]:
                kept.add(name)
        matches = kept
    return sorted(matches)


def _weights_path(path: str, name: str) -> str:
    """A metafile's ``Weights``: a local file, relative to the current directory."""
    if '://' in path:
        raise CheckpointError(
            f'{name}: Weights {path} is a URL; mmdmpt never downloads. Fetch it yourself and '
            'pass pretrained=<local file>.'
        )
    if not osp.isfile(path):
        raise CheckpointError(
            f'{name}: its checkpoint {path} (Weights in the model index, relative to the '
            f'current directory {os.getcwd()}) does not exist. It is written by `make demo`: '
            'run it in the repository root first, or pass pretrained=<checkpoint file>.'
        )
    return path


def get_model(
    model: Union[str, os.PathLike, Config],
    pretrained: Union[bool, str, os.PathLike] = False,
    device: Optional[Union[str, torch.device]] = None,
    **kwargs,
) -> BaseModel:
    """A model of the model index, or of a config, ready for inference.

    As ``mmpretrain.get_model``: ``model`` is a name from
    :func:`list_models`, a ``.py`` config file or a ``Config``; ``kwargs``
    are merged into the config's ``model`` (e.g.
    ``backbone=dict(pretrained=None)``). The model is built and loaded as
    ``tools/test.py`` does (:func:`~mmdmpt.apis.build_reid_model`): the
    checkpoint is checked before anything is built, its tensors must fit the
    model, ``num_classes='auto'`` is read from it, and a trainable-only
    checkpoint takes its frozen weights from the config's CLIP file
    (``model.backbone.pretrained``), which must then exist.

    Args:
        model (str | PathLike | Config): A model name, a config file or a
            config.
        pretrained (bool | str | PathLike): False: no checkpoint (random
            prompts and head, with a warning). True: the model's ``Weights``
            in the index (for a name) or the config's ``load_from`` (for a
            config); an error when there are none. A path: that checkpoint.
            Defaults to False.
        device (str | torch.device, optional): Move the model there.
            Defaults to None (the CPU).
        **kwargs: Settings merged into the config's ``model``.

    Returns:
        BaseModel: The model in eval mode, with ``_config`` (the prepared
        config), ``_metainfo`` (the index entry, or None) and
        ``_checkpoint`` (the loaded file, or None) attached.

    Raises:
        ConfigError: On an unknown name or a bad config.
        CheckpointError: When ``pretrained=True`` finds no checkpoint, or
            the checkpoint is missing, unsafe or does not fit.

    Examples:
        >>> from mmdmpt.apis import get_model
        >>> model = get_model('dmpt_vit-tiny_synthetic', pretrained=True)  # after `make demo`
    """
    metainfo = None
    if isinstance(model, Config):
        config = copy.deepcopy(model)
        what = 'this config'
    elif isinstance(model, (str, os.PathLike)) and Path(model).suffix == '.py':
        config = load_config(os.fspath(model))
        what = os.fspath(model)
    elif isinstance(model, str):
        metainfo = ModelHub.get(model)
        config = metainfo.config
        what = metainfo.name
    else:
        raise TypeError(
            f'model must be a model name, a config file or a Config, got {type(model).__name__}'
        )

    if pretrained is True:
        if metainfo is not None:
            if not metainfo.weights:
                raise CheckpointError(
                    f'{metainfo.name} has no checkpoint in the model index (its results are '
                    'not yet measured by this project): train it with tools/train.py and pass '
                    'pretrained=<your checkpoint>.'
                )
            pretrained = _weights_path(metainfo.weights, metainfo.name)
        elif config.get('load_from'):
            pretrained = config.load_from
        else:
            raise CheckpointError(
                f'{what} names no checkpoint (no load_from): pass pretrained=<checkpoint file>.'
            )
    elif pretrained is False or pretrained is None:
        pretrained = None
    else:
        pretrained = os.fspath(pretrained)

    if kwargs:
        config.merge_from_dict(dict(model=kwargs))
    net = build_reid_model(config, pretrained)
    if device is not None:
        net.to(device)
    net._config = config
    net._metainfo = metainfo
    net._checkpoint = pretrained
    return net.eval()


def init_model(
    config: Union[str, os.PathLike, Config],
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    device: Optional[Union[str, torch.device]] = None,
    **kwargs,
) -> BaseModel:
    """Build a model from a config and load a checkpoint (mmpretrain's ``init_model``).

    Same as ``get_model(config, checkpoint, device, **kwargs)``: strict
    loading, eval mode.

    Args:
        config (str | PathLike | Config): A config file, a config or a model
            name.
        checkpoint (str | PathLike, optional): The checkpoint. Defaults to
            None (random prompts and head, with a warning).
        device (str | torch.device, optional): Defaults to None (the CPU).
        **kwargs: Settings merged into the config's ``model``.

    Returns:
        BaseModel: The model in eval mode.
    """
    return get_model(config, checkpoint if checkpoint is not None else False, device, **kwargs)


class _ModelInferencer(ReIDInferencer):
    """:class:`ReIDInferencer` around a model that is already built and loaded."""

    def __init__(self, model: BaseModel, cfg: Config, normalize: bool = True) -> None:
        self.cfg = cfg
        self.normalize = bool(normalize)
        self.model = model.eval()
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device('cpu')
        self.modalities = self._modalities()
        pipeline_cfg = _test_pipeline_cfg(cfg)
        self.backend_args = _loader_backend_args(pipeline_cfg)
        with DefaultScope.overwrite_default_scope(_scope(cfg)):
            self.pipeline = Compose([t for t in pipeline_cfg if not _is_loader(t)])


def inference_model(
    model: Union[BaseModel, ReIDInferencer, str, os.PathLike, Config],
    images_per_modality: Union[Mapping, Sequence[Mapping]],
    pretrained: Union[bool, str, os.PathLike] = True,
    device: Optional[Union[str, torch.device]] = None,
    normalize: bool = True,
    batch_size: int = 8,
) -> torch.Tensor:
    """The test feature(s) of multi-modal sample(s) (mmpretrain's ``inference_model``).

    The samples go through the config's test pipeline, the data
    preprocessor and the model's ``'tensor'`` mode, as in
    :class:`ReIDInferencer`.

    Args:
        model (BaseModel | ReIDInferencer | str | PathLike | Config): A model
            from :func:`get_model` / :func:`init_model` (it carries its
            config), an inferencer, or a model name / config to build with
            :func:`get_model` and ``pretrained``.
        images_per_modality (Mapping | Sequence[Mapping]): One sample
            ``{modality: image path or uint8 array}`` (absent modalities
            left out), or a list of them.
        pretrained (bool | str | PathLike): Only when ``model`` is a name or
            a config: the checkpoint (see :func:`get_model`). Defaults to
            True (the index's ``Weights`` / the config's ``load_from``).
        device (str | torch.device, optional): Only when ``model`` is a name
            or a config. Defaults to None (the CPU).
        normalize (bool): L2-normalise the features. Defaults to True.
        batch_size (int): Samples per forward pass. Defaults to 8.

    Returns:
        torch.Tensor: ``(M * D,)`` for one sample, ``(N, M * D)`` for a list;
        float32 on the CPU, modalities in the model's order, the slices of
        absent modalities zero.

    Raises:
        ConfigError: If ``model`` is a model without its config.

    Examples:
        >>> model = get_model('dmpt_vit-tiny_synthetic', pretrained=True)
        >>> feat = inference_model(model, {'rgb': 'a_rgb.jpg', 'tir': 'a_tir.jpg'})
    """
    if isinstance(model, ReIDInferencer):
        inferencer = model
    else:
        if not isinstance(model, BaseModel):
            model = get_model(model, pretrained=pretrained, device=device)
        cfg = getattr(model, '_config', None)
        if cfg is None:
            raise ConfigError(
                'inference_model needs the config of the model (its test pipeline): build the '
                'model with mmdmpt.apis.get_model / init_model, or pass a ReIDInferencer.'
            )
        inferencer = _ModelInferencer(model, cfg, normalize=normalize)
    single = isinstance(images_per_modality, Mapping)
    feats = inferencer(images_per_modality, batch_size=batch_size, normalize=normalize)
    return feats[0] if single else feats
