"""ONNX export of a ReID model's test feature, and its check with onnxruntime.

The graph is :class:`~mmdmpt.models.export.ExportableReID` (any modality
mask, normalisation inside), exported with PyTorch's ``torch.export``-based
exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript underneath);
afterwards every computation that depends on weights only (the modality
prompts from the modality knowledge, the split attention projections) is
folded into constants. The file has

* inputs ``images`` float32 ``(N, M, 3, H, W)``, RGB in 0-255 at the model's
  input size, and ``modality_mask`` bool ``(N, M)`` (True = present);
* output ``feature`` float32 ``(N, D)``: the model's test feature
  (``model(..., mode='tensor')``), absent modalities' slices zero;
* metadata (``metadata_props``): ``mmdmpt.modalities``, ``mmdmpt.img_size``,
  ``mmdmpt.feature_dim``, ``mmdmpt.input``.

``N`` is fixed (``batch_size``) or dynamic (``dynamic_batch=True``).

onnx, onnxruntime and onnxscript come with the ``deploy`` extra
(``requirements/deploy.txt``); they are imported only here, when used.
"""

import copy
import itertools
import os
import os.path as osp
import time
import warnings
from collections.abc import Mapping
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.structures import BaseDataElement

from mmdmpt.models.export import ExportableReID
from mmdmpt.utils.errors import ConfigError, DataError
from mmdmpt.utils.io import atomic_write_path

__all__ = [
    'DEFAULT_OPSET',
    'INPUT_NAMES',
    'OPSETS',
    'OUTPUT_NAME',
    'check_export_target',
    'check_onnx_file',
    'eager_features',
    'export_onnx',
    'load_test_images',
    'mask_name',
    'mask_patterns',
    'onnx_features',
    'onnx_session',
    'parity_rows',
]

#: Operator sets the exporter writes natively (its torchlib starts at 18;
#: 23 is the highest it knows). Lower ones would need ONNX's version converter.
OPSETS = tuple(range(18, 24))
#: 18: LayerNormalization (17+) and every op used, read by onnxruntime >= 1.14
#: and TensorRT >= 8.6.
DEFAULT_OPSET = 18
INPUT_NAMES = ('images', 'modality_mask')
OUTPUT_NAME = 'feature'
_DEPLOY_HINT = 'install the deploy extra: pip install -e ".[deploy]" (requirements/deploy.txt)'
#: A protobuf message (the .onnx file) cannot exceed 2 GiB.
_MAX_PROTO_BYTES = 2**31 - 1


def _import_deploy(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f'ONNX export and its check need {name}: {_DEPLOY_HINT}') from exc


def check_export_target(output_file: str, opset: int) -> None:
    """Refuse an output path or operator set the export cannot use, before any work.

    Args:
        output_file (str): The ``.onnx`` file to write.
        opset (int): The ONNX operator set.

    Raises:
        ConfigError: If ``opset`` is not in :data:`OPSETS`, ``output_file``
            does not end in ``.onnx``, is a directory, or its folder exists
            as a file or cannot be written.
    """
    if opset not in OPSETS:
        raise ConfigError(
            f'opset {opset} (--opset) is not supported: the exporter (torch.onnx, dynamo=True) '
            f'writes operator sets {OPSETS[0]}-{OPSETS[-1]}; the default {DEFAULT_OPSET} suits '
            'onnxruntime and TensorRT.'
        )
    if not str(output_file).lower().endswith('.onnx'):
        raise ConfigError(f'the output file (--output-file) must end in .onnx, got {output_file}')
    if osp.isdir(output_file):
        raise ConfigError(f'the output file {output_file} is a directory; expected a .onnx file')
    folder = osp.dirname(osp.abspath(output_file))
    existing = folder
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise ConfigError(
            f'the output file {output_file}: {existing} is a file, so the folder {folder} cannot '
            'be created'
        )
    if not os.access(existing, os.W_OK):
        raise ConfigError(f'the output file {output_file}: {existing} is not writable')


def _example_inputs(wrapper: ExportableReID, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shape = (batch, wrapper.num_modalities, 3, *wrapper.img_size)
    images = torch.rand(shape, generator=gen) * 255.0
    mask = torch.ones(batch, wrapper.num_modalities, dtype=torch.bool)
    if wrapper.num_modalities > 1:
        mask[0, -1] = False
    return images, mask


def export_onnx(
    model: torch.nn.Module,
    output_file: str,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    batch_size: int = 1,
) -> Dict[str, object]:
    """Export the test feature of ``model`` to an ONNX file.

    Args:
        model (nn.Module): A ``MultiModalReID`` in eval mode (e.g. from
            :func:`~mmdmpt.apis.build_reid_model`) on the CPU.
        output_file (str): The ``.onnx`` file (written atomically; folders
            are created).
        opset (int): ONNX operator set, one of :data:`OPSETS`. Defaults to
            :data:`DEFAULT_OPSET`.
        dynamic_batch (bool): Make the batch axis dynamic. Defaults to False.
        batch_size (int): The fixed batch size without ``dynamic_batch``.
            Defaults to 1.

    Returns:
        dict: ``output_file``, ``size_mb``, ``opset``, ``batch`` (an int or
        ``'dynamic'``), ``modalities``, ``img_size``, ``feature_dim``,
        ``export_s`` (seconds) and ``nodes`` (graph nodes).

    Raises:
        ConfigError: If the output path or operator set is refused
            (:func:`check_export_target`), ``batch_size`` is not positive,
            or the model is of a kind the graph cannot reproduce.
    """
    check_export_target(output_file, opset)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f'batch_size must be a positive int, got {batch_size!r}')
    _import_deploy('onnxscript')
    onnx = _import_deploy('onnx')
    from onnxscript import optimizer

    start = time.perf_counter()
    wrapper = ExportableReID(model.eval())
    # A dynamic axis is traced at size 2: torch.export specialises sizes 0 and 1.
    images, mask = _example_inputs(wrapper, 2 if dynamic_batch else batch_size)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {'images': {0: 'batch'}, 'modality_mask': {0: 'batch'}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the exporter's own notes (axis names, deprecations)
        program = torch.onnx.export(
            wrapper,
            (images, mask),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
    # Fold what depends on weights only (modality prompts from the knowledge
    # buffer, slices of the attention projections): no size limits.
    optimizer.optimize(program.model, input_size_limit=2**62, output_size_limit=2**62)
    proto = program.model_proto
    meta = {
        'mmdmpt.modalities': ','.join(wrapper.modalities),
        'mmdmpt.img_size': f'{wrapper.img_size[0]}x{wrapper.img_size[1]}',
        'mmdmpt.feature_dim': str(wrapper.feature_dim),
        'mmdmpt.input': 'images: float32 (N, M, 3, H, W) RGB 0-255, normalised inside; '
        'modality_mask: bool (N, M), True = present',
    }
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = 'mmdmpt test feature (MultiModalReID, mode="tensor")'
    if proto.ByteSize() > _MAX_PROTO_BYTES:
        raise ConfigError(
            f'the exported model is {proto.ByteSize() / 2**30:.1f} GiB: more than a single '
            '.onnx file can hold (2 GiB)'
        )
    with atomic_write_path(output_file) as tmp:
        onnx.save_model(proto, tmp)
    return dict(
        output_file=output_file,
        size_mb=osp.getsize(output_file) / 2**20,
        opset=opset,
        batch='dynamic' if dynamic_batch else batch_size,
        modalities=wrapper.modalities,
        img_size=wrapper.img_size,
        feature_dim=wrapper.feature_dim,
        export_s=time.perf_counter() - start,
        nodes=len(proto.graph.node),
    )


def onnx_session(path: str, num_threads: Optional[int] = None):
    """An onnxruntime CPU session of an exported file.

    Args:
        path (str): The ``.onnx`` file.
        num_threads (int, optional): Intra-op threads. Defaults to None
            (onnxruntime's default: one per physical core).

    Returns:
        onnxruntime.InferenceSession: The session.
    """
    ort = _import_deploy('onnxruntime')
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def check_onnx_file(session, model: torch.nn.Module, path: str = 'the ONNX file') -> None:
    """Refuse a file exported for another modality order, input size or feature size.

    Args:
        session (onnxruntime.InferenceSession): The file's session.
        model (nn.Module): The ``MultiModalReID`` it is compared with.
        path (str): The file's name, for the message. Defaults to
            ``'the ONNX file'``.

    Raises:
        ConfigError: If the file's inputs / output or its mmdmpt metadata
            differ from the model's.
    """
    expected = dict(
        modalities=','.join(model.backbone.modalities),
        img_size='x'.join(str(int(s)) for s in model.backbone.img_size),
        feature_dim=str(len(model.backbone.modalities) * int(model.backbone.out_channels)),
    )
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != (list(INPUT_NAMES), [OUTPUT_NAME]):
        raise ConfigError(
            f'{path} has inputs {names[0]} and outputs {names[1]}; expected an mmdmpt export '
            f'with inputs {list(INPUT_NAMES)} and output [{OUTPUT_NAME!r}]'
        )
    meta = session.get_modelmeta().custom_metadata_map
    different = [
        f'{key}: file {meta.get("mmdmpt." + key)!r}, model {value!r}'
        for key, value in expected.items()
        if meta.get('mmdmpt.' + key) != value
    ]
    if different:
        raise ConfigError(f'{path} was exported from another model: ' + '; '.join(different))


def mask_patterns(num_modalities: int) -> List[Tuple[bool, ...]]:
    """Every non-empty modality mask: all present first, then fewer and fewer.

    Args:
        num_modalities (int): M.

    Returns:
        list[tuple[bool, ...]]: The ``2 ** M - 1`` masks.
    """
    masks = [m for m in itertools.product((True, False), repeat=num_modalities) if any(m)]
    return sorted(masks, key=lambda m: -sum(m))


def mask_name(mask: Sequence[bool], modalities: Sequence[str]) -> str:
    """``'rgb+tir'`` for the present modalities of a mask."""
    return '+'.join(name for name, keep in zip(modalities, mask) if keep)


@torch.no_grad()
def eager_features(
    model: torch.nn.Module, images: torch.Tensor, modality_mask: torch.Tensor
) -> torch.Tensor:
    """The eager model's test feature, as the test loop computes it.

    The model's data preprocessor, then ``model(..., mode='tensor')``, with
    the mask on the data samples.

    Args:
        model (nn.Module): A ``MultiModalReID`` in eval mode.
        images (Tensor): ``(N, M, 3, H, W)`` RGB in 0-255 (float or uint8).
        modality_mask (Tensor): ``(N, M)`` bool.

    Returns:
        Tensor: ``(N, D)`` float32 on the CPU.
    """
    modalities = tuple(model.backbone.modalities)
    samples = [
        BaseDataElement(metainfo=dict(modalities=modalities, modality_mask=row.numpy()))
        for row in modality_mask.bool().cpu()
    ]
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), False)
    return model(data['inputs'], data['data_samples'], mode='tensor').float().cpu()


def onnx_features(session, images: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
    """Run an exported file on a batch; a fixed batch size is served in chunks.

    Args:
        session (onnxruntime.InferenceSession): From :func:`onnx_session`.
        images (Tensor): ``(N, M, 3, H, W)`` RGB in 0-255.
        modality_mask (Tensor): ``(N, M)`` bool.

    Returns:
        Tensor: ``(N, D)`` float32.

    Raises:
        ValueError: If the file has a fixed batch size that does not divide N.
    """
    batch = session.get_inputs()[0].shape[0]
    num = images.shape[0]
    step = batch if isinstance(batch, int) else num
    if num % step:
        raise ValueError(f'{num} samples for an ONNX file with fixed batch size {batch}')
    images = images.float().numpy()
    mask = modality_mask.bool().numpy()
    outs = [
        session.run(
            [OUTPUT_NAME],
            {INPUT_NAMES[0]: images[i : i + step], INPUT_NAMES[1]: mask[i : i + step]},
        )[0]
        for i in range(0, num, step)
    ]
    import numpy as np

    return torch.from_numpy(np.concatenate(outs))


def parity_rows(
    model: torch.nn.Module,
    session,
    images: torch.Tensor,
    source: str,
    masks: Optional[Sequence[Tuple[bool, ...]]] = None,
) -> List[Dict[str, object]]:
    """Max abs difference between the exported file and the eager model, per mask.

    Every mask of ``masks`` is applied to the whole batch; a last row
    (``'mixed'``) gives each sample another mask (cycling through
    ``masks``), so that samples with different modalities share a batch.
    Absent modalities keep their real images in ``images``: both sides must
    ignore them.

    Args:
        model (nn.Module): The eager ``MultiModalReID`` (eval mode).
        session (onnxruntime.InferenceSession): The exported file.
        images (Tensor): ``(N, M, 3, H, W)`` RGB in 0-255.
        source (str): Where the images come from, for the rows.
        masks (Sequence[tuple[bool, ...]], optional): Defaults to None:
            :func:`mask_patterns` (all non-empty masks).

    Returns:
        list[dict]: ``source``, ``mask`` (e.g. ``'rgb+tir'`` or ``'mixed'``),
        ``samples``, ``max_abs_diff`` and ``max_abs`` (the largest feature
        value, for scale).
    """
    modalities = tuple(model.backbone.modalities)
    num, num_mod = images.shape[:2]
    masks = list(masks) if masks is not None else mask_patterns(num_mod)
    batches = [(mask_name(m, modalities), torch.tensor(m).expand(num, num_mod)) for m in masks]
    if len(masks) > 1 and num > 1:
        mixed = torch.tensor([masks[i % len(masks)] for i in range(num)])
        batches.append(('mixed', mixed))
    rows = []
    for name, mask in batches:
        mask = mask.clone()
        ref = eager_features(model, images, mask)
        out = onnx_features(session, images, mask)
        rows.append(
            dict(
                source=source,
                mask=name,
                samples=num,
                max_abs_diff=float((out - ref).abs().max()),
                max_abs=float(ref.abs().max()),
            )
        )
    return rows


def load_test_images(cfg, num_samples: int) -> torch.Tensor:
    """The first ``num_samples`` samples of a config's test set, as the model sees them.

    The config's ``test_dataloader`` (its pipeline: loading, resizing,
    packing) with ``num_workers=0``, no shuffling.

    Args:
        cfg (mmengine.Config): A config with ``test_dataloader`` whose data
            exist.
        num_samples (int): How many samples.

    Returns:
        Tensor: uint8 ``(n, M, 3, H, W)``, ``n = min(num_samples, len(set))``.

    Raises:
        ConfigError: If the config has no test dataloader.
        DataError: If the test set is empty.
    """
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    loader = cfg.get('test_dataloader')
    if not isinstance(loader, Mapping) or 'dataset' not in loader:
        raise ConfigError('the config has no test_dataloader with a dataset to read images from')
    loader = copy.deepcopy(dict(loader))
    loader.update(batch_size=int(num_samples), num_workers=0)
    loader.pop('persistent_workers', None)
    loader['sampler'] = dict(type='DefaultSampler', shuffle=False)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmdmpt'):
        dataloader = Runner.build_dataloader(loader)
    for batch in dataloader:
        return batch['inputs'][:num_samples]
    raise DataError(f'the test set of the config ({loader["dataset"].get("data_root")}) is empty')
