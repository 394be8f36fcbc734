"""Input conversion and validation shared by the functional evaluation code.

The functional package is plain NumPy/PyTorch math (no MMEngine machinery);
the removal rules are named in :mod:`mmdmpt.structures.reid_features`.
"""

from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

from mmdmpt.structures.reid_features import REMOVAL_RULES

ArrayLike = Union[np.ndarray, torch.Tensor, list, tuple]

METRICS = ('cosine', 'euclidean')


def check_metric(metric: str) -> str:
    """Return ``metric`` if it names a supported distance, else raise.

    Args:
        metric (str): ``'cosine'`` or ``'euclidean'``.

    Returns:
        str: The metric name, unchanged.
    """
    if metric not in METRICS:
        raise ValueError(f'metric must be one of {METRICS}, got {metric!r}.')
    return metric


def check_max_rank(max_rank: Any) -> int:
    """Return ``max_rank`` as an int after checking that it is >= 1."""
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)):
        raise TypeError(f'max_rank must be an int, got {type(max_rank).__name__}.')
    if max_rank < 1:
        raise ValueError(f'max_rank must be >= 1, got {max_rank}.')
    return int(max_rank)


def to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """Convert a NumPy array, a tensor (any device) or a sequence to NumPy."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def to_tensor(x: ArrayLike, name: str, device: Optional[torch.device] = None) -> torch.Tensor:
    """Convert a NumPy array, a tensor or a sequence to a tensor on ``device``."""
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    else:
        tensor = torch.as_tensor(np.asarray(x))
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def check_ids(x: ArrayLike, name: str, length: Optional[int] = None) -> np.ndarray:
    """Return the ids ``x`` as a 1-D integer NumPy array.

    Args:
        x (ArrayLike): Identity, camera or scene ids.
        name (str): Argument name used in error messages.
        length (int, optional): Expected length. Defaults to None (any).

    Returns:
        np.ndarray: ``int64`` array of shape ``(length,)``.
    """
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f'{name} must be 1-D, got shape {tuple(arr.shape)}.')
    if length is not None and arr.shape[0] != length:
        raise ValueError(f'{name} has {arr.shape[0]} entries, expected {length}.')
    if arr.dtype.kind == 'f' and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # e.g. ids stored as float labels
    if arr.dtype.kind not in 'iub':
        raise TypeError(f'{name} must hold integers, got dtype {arr.dtype}.')
    return arr.astype(np.int64, copy=False)


#: Which gallery samples a query does not rank (see
#: :data:`mmdmpt.structures.REMOVAL_RULES`); None picks ``'scene'`` when scene
#: ids are given, else ``'camera'``.
RemovalRule = Optional[str]


def check_removal_rule(removal_rule: RemovalRule) -> RemovalRule:
    """Return ``removal_rule`` if it is None or one of ``REMOVAL_RULES``, else raise.

    Args:
        removal_rule (str, optional): ``'camera'``, ``'scene'``, ``'none'``
            or None (chosen from the ids given).

    Returns:
        str | None: The rule, unchanged.
    """
    if removal_rule is not None and removal_rule not in REMOVAL_RULES:
        raise ValueError(
            f'removal_rule must be one of {REMOVAL_RULES} (or None: scenes when scene ids are '
            f'given, else cameras), got {removal_rule!r}.'
        )
    return removal_rule


def check_id_arrays(
    num_query: int,
    num_gallery: int,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: Optional[ArrayLike],
    gallery_camids: Optional[ArrayLike],
    query_sceneids: Optional[ArrayLike],
    gallery_sceneids: Optional[ArrayLike],
    removal_rule: RemovalRule = None,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray], str]:
    """Validate the id arrays and pick the removal groups.

    A gallery sample is removed from a query's ranking when it has the same
    identity and the same *group*: the camera (``'camera'``), or the scene
    (``'scene'``); with ``'none'`` nothing is removed. Without a rule, scenes
    are used when scene ids are given for both sides, else cameras.

    Args:
        num_query (int): Number of queries.
        num_gallery (int): Number of gallery samples.
        query_pids (ArrayLike): ``(Q,)`` identities.
        gallery_pids (ArrayLike): ``(G,)`` identities.
        query_camids (ArrayLike, optional): ``(Q,)`` cameras; only needed by
            the camera rule.
        gallery_camids (ArrayLike, optional): ``(G,)`` cameras.
        query_sceneids (ArrayLike, optional): ``(Q,)`` scenes; only needed by
            the scene rule.
        gallery_sceneids (ArrayLike, optional): ``(G,)`` scenes.
        removal_rule (str, optional): ``'camera'``, ``'scene'``, ``'none'``
            or None. Defaults to None.

    Returns:
        tuple: ``(query_pids, gallery_pids, query_groups, gallery_groups,
        rule)``: ``int64`` arrays (the groups None for ``'none'``) and the
        rule applied.
    """
    check_removal_rule(removal_rule)
    if num_query < 1:
        raise ValueError('There are no query samples to evaluate.')
    if num_gallery < 1:
        raise ValueError('There are no gallery samples to evaluate against.')
    q_pids = check_ids(query_pids, 'query_pids', num_query)
    g_pids = check_ids(gallery_pids, 'gallery_pids', num_gallery)
    if (query_sceneids is None) != (gallery_sceneids is None):
        given = 'query_sceneids' if query_sceneids is not None else 'gallery_sceneids'
        raise ValueError(
            f'Only {given} was given: pass scene ids for both query and gallery '
            '(same-id-same-scene rule) or for neither (same-id-same-camera rule).'
        )
    if removal_rule is None:
        removal_rule = 'camera' if query_sceneids is None else 'scene'
    if removal_rule == 'none':
        return q_pids, g_pids, None, None, removal_rule
    if removal_rule == 'scene':
        if query_sceneids is None:
            raise ValueError(
                "removal_rule='scene' needs query_sceneids and gallery_sceneids "
                "(or removal_rule='camera' / 'none')."
            )
        q_scenes = check_ids(query_sceneids, 'query_sceneids', num_query)
        g_scenes = check_ids(gallery_sceneids, 'gallery_sceneids', num_gallery)
        return q_pids, g_pids, q_scenes, g_scenes, removal_rule
    if query_camids is None or gallery_camids is None:
        raise ValueError(
            'The same-id-same-camera rule needs query_camids and gallery_camids; pass '
            "removal_rule='none' for data without cameras."
        )
    q_cams = check_ids(query_camids, 'query_camids', num_query)
    g_cams = check_ids(gallery_camids, 'gallery_camids', num_gallery)
    return q_pids, g_pids, q_cams, g_cams, removal_rule


def check_features(
    query_feats: ArrayLike, gallery_feats: ArrayLike, device: Optional[torch.device] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return query and gallery features as 2-D tensors with equal widths."""
    if device is None and isinstance(query_feats, torch.Tensor):
        device = query_feats.device
    q = to_tensor(query_feats, 'query_feats', device)
    g = to_tensor(gallery_feats, 'gallery_feats', q.device)
    for name, t in (('query_feats', q), ('gallery_feats', g)):
        if t.dim() != 2:
            raise ValueError(f'{name} must be 2-D (num_samples, dim), got shape {tuple(t.shape)}.')
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.uint8)):
            raise TypeError(f'{name} must be numeric, got {t.dtype}.')
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f'Feature dims differ: query features have dim {q.shape[1]}, '
            f'gallery features have dim {g.shape[1]}.'
        )
    return q, g
