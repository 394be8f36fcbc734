"""Small helpers shared by the backbone, head and top model."""

import contextlib
import ctypes
import gc
import sys
from typing import ContextManager, Dict

import torch
from torch import nn


def count_parameters(model: nn.Module) -> Dict[str, float]:
    """Count the parameters of a :class:`MultiModalReID`-like model.

    Args:
        model (nn.Module): A model with ``backbone.visual`` (the CLIP visual
            tower) and optionally ``head.classifier_parameters()``.

    Returns:
        dict: ``backbone_params`` (every parameter of the CLIP visual tower as
        built, including ``proj``), ``total_params``, ``trainable_params``,
        ``classifier_params`` (trainable ID-classifier weights),
        ``trainable_params_no_classifier`` and ``ratio``
        (= ``trainable_params_no_classifier / backbone_params``).
    """
    visual = model.backbone.visual
    backbone_params = sum(p.numel() for p in visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = getattr(model, 'head', None)
    classifier = 0
    if head is not None and hasattr(head, 'classifier_parameters'):
        classifier = sum(p.numel() for p in head.classifier_parameters() if p.requires_grad)
    no_cls = trainable - classifier
    return dict(
        backbone_params=int(backbone_params),
        total_params=int(total),
        trainable_params=int(trainable),
        classifier_params=int(classifier),
        trainable_params_no_classifier=int(no_cls),
        ratio=float(no_cls / backbone_params) if backbone_params else float('nan'),
    )


def release_free_memory() -> bool:
    """Hand memory that Python and torch have freed back to the OS.

    After a large, short-lived build step (e.g. running and deleting CLIP's
    text tower) glibc keeps the freed heap pages resident; ``malloc_trim(0)``
    returns them. A no-op (returning False) where glibc is not the allocator.

    Returns:
        bool: Whether ``malloc_trim`` ran.
    """
    gc.collect()
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.malloc_trim(ctypes.c_size_t(0))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return True


def autocast_off(device: torch.device) -> ContextManager:
    """A context in which autocast is disabled for ``device``'s type.

    Losses run inside the autocast region of mixed-precision training, where
    matrix products of float32 tensors are computed in float16/bfloat16 and
    some reductions follow the input's low precision. Inside this context
    every operation runs in the dtype of its inputs, so a loss that casts its
    inputs to float32 computes in float32 whatever the autocast state.

    Args:
        device (torch.device): Device of the tensors computed on.

    Returns:
        ContextManager: ``torch.autocast(device.type, enabled=False)``, or a
        no-op context for device types autocast does not know.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
