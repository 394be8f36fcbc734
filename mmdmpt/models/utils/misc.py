"""Small helpers shared by the backbone, head and top model."""

import ctypes
import gc
import sys
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn


def stack_modality_mask(
    data_samples: Optional[Sequence],
    num_samples: int,
    num_modalities: int,
    device: Optional[torch.device] = None,
) -> Optional[torch.Tensor]:
    """Collect ``modality_mask`` from data samples into an ``(N, M)`` bool tensor.

    Each sample may carry ``modality_mask`` (bool ``(M,)``, True where the
    modality is present) in its metainfo or data fields (see
    ``docs/contracts.md``). Samples without it count as fully present.

    Args:
        data_samples (Sequence, optional): The batch's data samples.
        num_samples (int): N.
        num_modalities (int): M.
        device (torch.device, optional): Device of the result. Defaults to None.

    Returns:
        Tensor | None: ``(N, M)`` bool, or None when no sample carries a mask
        (meaning all modalities are present).

    Raises:
        ValueError: If a mask does not have M entries or the number of data
            samples differs from N.
    """
    if not data_samples:
        return None
    if len(data_samples) != num_samples:
        raise ValueError(f'{len(data_samples)} data samples for {num_samples} inputs')
    masks: List[Optional[torch.Tensor]] = []
    for sample in data_samples:
        mask = getattr(sample, 'modality_mask', None)
        if mask is None and isinstance(sample, dict):
            mask = sample.get('modality_mask')
        masks.append(None if mask is None else torch.as_tensor(mask).reshape(-1).bool())
    if all(m is None for m in masks):
        return None
    rows = []
    for mask in masks:
        if mask is None:
            mask = torch.ones(num_modalities, dtype=torch.bool)
        if mask.numel() != num_modalities:
            raise ValueError(
                f'modality_mask has {mask.numel()} entries but the model has {num_modalities} '
                'modalities'
            )
        rows.append(mask.cpu())
    return torch.stack(rows).to(device)


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
