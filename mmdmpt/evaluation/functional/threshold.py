"""A match threshold for "same identity or not", calibrated on held-out identities.

A search answers "which gallery samples are nearest"; deciding "is this the
same identity" needs a distance threshold ``t``: a pair is judged a match
when its distance is at most ``t``. On held-out identities (never trained
on), the distances of matching pairs (same identity) and non-matching pairs
give, for every ``t``:

- the *false match rate* ``FMR(t)``: the fraction of non-matching pairs at
  distance ``<= t`` (judged the same identity, wrongly);
- the *true match rate* ``TMR(t)``: the fraction of matching pairs at
  distance ``<= t`` (``1 - TMR`` is the false non-match rate, FNMR).

:func:`calibrate_threshold` picks the largest ``t`` whose FMR on the
calibration pairs stays at or under a target (1 % by default) and reports
the TMR there; :func:`roc_points` gives the curve (ROC: TMR against FMR; DET:
FNMR against FMR). The pairs are the query-gallery pairs of a split, without
the pairs the evaluation's removal rule hides (same identity seen by the
same camera, or in the same scene): :func:`pair_distances`.

The calibration is saved as a small JSON file (:func:`save_calibration`,
:func:`load_calibration`) that ``tools/search.py`` and
:class:`~mmdmpt.apis.ReIDInferencer` accept.
"""

import json
import math
import os.path as osp
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError
from mmdmpt.utils.io import atomic_write_path

from ._utils import ArrayLike, check_features, check_ids, check_metric
from .distance import check_chunk_size, pairwise_distance, prepare_features

__all__ = [
    'CALIBRATION_KEYS',
    'pair_distances',
    'calibrate_threshold',
    'roc_points',
    'save_calibration',
    'load_calibration',
    'resolve_threshold',
]

#: Keys every calibration file holds.
CALIBRATION_KEYS = ('threshold', 'metric', 'target_fmr', 'fmr', 'tmr')


def pair_distances(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_groups: Optional[ArrayLike] = None,
    gallery_groups: Optional[ArrayLike] = None,
    metric: str = 'cosine',
    chunk_size: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Distances of the matching and the non-matching query-gallery pairs.

    Args:
        query_feats (ArrayLike): ``(Q, D)`` features.
        gallery_feats (ArrayLike): ``(G, D)`` features.
        query_pids (ArrayLike): ``(Q,)`` identities.
        gallery_pids (ArrayLike): ``(G,)`` identities.
        query_groups (ArrayLike, optional): ``(Q,)`` cameras (or scenes):
            pairs of one identity and one group are left out, as the
            evaluation's removal rule does. Defaults to None (every pair).
        gallery_groups (ArrayLike, optional): ``(G,)`` cameras (or scenes).
            Defaults to None.
        metric (str): ``'cosine'`` or ``'euclidean'``. Defaults to
            ``'cosine'``.
        chunk_size (int, optional): Queries per chunk. Defaults to None.

    Returns:
        tuple[np.ndarray, np.ndarray]: float64 distances of the matching
        pairs and of the non-matching pairs.
    """
    check_metric(metric)
    q, g = check_features(query_feats, gallery_feats, torch.device('cpu'))
    q_pids = torch.from_numpy(check_ids(query_pids, 'query_pids', q.shape[0]))
    g_pids = torch.from_numpy(check_ids(gallery_pids, 'gallery_pids', g.shape[0]))
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError('give query_groups and gallery_groups together (or neither)')
    q_groups = g_groups = None
    if query_groups is not None:
        q_groups = torch.from_numpy(check_ids(query_groups, 'query_groups', q.shape[0]))
        g_groups = torch.from_numpy(check_ids(gallery_groups, 'gallery_groups', g.shape[0]))
    g_ops = prepare_features(g, metric, deduplicate=True)
    chunk_size = check_chunk_size(chunk_size, g.shape[0])
    matches, others = [], []
    for start in range(0, q.shape[0], chunk_size):
        stop = start + chunk_size
        dist = pairwise_distance(prepare_features(q[start:stop], metric), g_ops, metric)
        same = q_pids[start:stop, None] == g_pids[None, :]
        kept = torch.ones_like(same)
        if q_groups is not None:
            kept = ~(same & (q_groups[start:stop, None] == g_groups[None, :]))
        matches.append(dist[same & kept].numpy())
        others.append(dist[~same].numpy())
    return np.concatenate(matches), np.concatenate(others)


def _rates(match_d: np.ndarray, nonmatch_d: np.ndarray, t: float) -> Tuple[float, float]:
    """``(FMR(t), TMR(t))`` of sorted distance arrays."""
    fmr = np.searchsorted(nonmatch_d, t, side='right') / nonmatch_d.size
    tmr = np.searchsorted(match_d, t, side='right') / match_d.size
    return float(fmr), float(tmr)


def calibrate_threshold(
    match_distances: ArrayLike, nonmatch_distances: ArrayLike, target_fmr: float = 0.01
) -> Dict[str, Any]:
    """The largest threshold whose false match rate is at most ``target_fmr``.

    With the non-matching distances sorted, ``n = floor(target_fmr * N)``
    of them may fall at or under the threshold; the threshold is put midway
    between the largest distance that may (the ``n``-th distinct value) and
    the next one, so that the FMR on these pairs is exactly the largest
    achievable value ``<= target_fmr``. With ``n = 0`` it lies just under the
    smallest non-matching distance.

    Args:
        match_distances (ArrayLike): Distances of matching pairs (>= 1).
        nonmatch_distances (ArrayLike): Distances of non-matching pairs (>= 1).
        target_fmr (float): The false match rate allowed, in ``(0, 1)``.
            Defaults to 0.01.

    Returns:
        dict: ``threshold``, ``target_fmr``, ``fmr`` and ``tmr`` (rates at the
        threshold on these pairs), ``num_match_pairs``,
        ``num_nonmatch_pairs``, and ``fmr_resolution`` (``1 / N``: a target
        under it can only be met with FMR 0).

    Raises:
        ConfigError: If ``target_fmr`` is not in ``(0, 1)``.
        DataError: If either set of pairs is empty or holds NaN.
    """
    if isinstance(target_fmr, bool) or not isinstance(target_fmr, (int, float)):
        raise ConfigError(f'target_fmr must be a number in (0, 1), got {target_fmr!r}')
    if not 0.0 < float(target_fmr) < 1.0:
        raise ConfigError(f'target_fmr must be in (0, 1) (e.g. 0.01 for 1 %), got {target_fmr}')
    match_d = np.sort(np.asarray(match_distances, dtype=np.float64).reshape(-1))
    nonmatch_d = np.sort(np.asarray(nonmatch_distances, dtype=np.float64).reshape(-1))
    for name, arr in (('matching', match_d), ('non-matching', nonmatch_d)):
        if arr.size == 0:
            raise DataError(
                f'no {name} pairs to calibrate on: the split needs several identities, each '
                'with samples the removal rule leaves (e.g. seen by two cameras)'
            )
        if np.isnan(arr).any():
            raise DataError(f'the {name} pair distances contain NaN')
    allowed = int(math.floor(float(target_fmr) * nonmatch_d.size + 1e-9))
    nxt = nonmatch_d[min(allowed, nonmatch_d.size - 1)]
    if allowed >= nonmatch_d.size:
        threshold = float(nonmatch_d[-1])
    else:
        below = nonmatch_d[nonmatch_d < nxt]
        if below.size:
            threshold = float((below[-1] + nxt) / 2.0)
            if not below[-1] < threshold < nxt:  # adjacent floats
                threshold = float(below[-1])
        else:
            threshold = float(np.nextafter(nxt, -np.inf))
    fmr, tmr = _rates(match_d, nonmatch_d, threshold)
    return dict(
        threshold=threshold,
        target_fmr=float(target_fmr),
        fmr=fmr,
        tmr=tmr,
        num_match_pairs=int(match_d.size),
        num_nonmatch_pairs=int(nonmatch_d.size),
        fmr_resolution=1.0 / nonmatch_d.size,
    )


def roc_points(
    match_distances: ArrayLike, nonmatch_distances: ArrayLike, num_points: int = 512
) -> Dict[str, np.ndarray]:
    """The ROC / DET curve: rates at thresholds spread over the distances.

    Args:
        match_distances (ArrayLike): Distances of matching pairs.
        nonmatch_distances (ArrayLike): Distances of non-matching pairs.
        num_points (int): Thresholds (quantiles of all distances, plus both
            ends). Defaults to 512.

    Returns:
        dict: ``thresholds``, ``fmr``, ``tmr`` and ``fnmr`` (``1 - tmr``),
        float64 arrays ordered by threshold.
    """
    match_d = np.sort(np.asarray(match_distances, dtype=np.float64).reshape(-1))
    nonmatch_d = np.sort(np.asarray(nonmatch_distances, dtype=np.float64).reshape(-1))
    both = np.concatenate([match_d, nonmatch_d])
    qs = np.linspace(0.0, 1.0, max(2, int(num_points)))
    thresholds = np.unique(np.concatenate([np.quantile(both, qs), [both.min() - 1e-12]]))
    fmr = np.searchsorted(nonmatch_d, thresholds, side='right') / nonmatch_d.size
    tmr = np.searchsorted(match_d, thresholds, side='right') / match_d.size
    return dict(thresholds=thresholds, fmr=fmr, tmr=tmr, fnmr=1.0 - tmr)


def save_calibration(calibration: Mapping[str, Any], path: str) -> str:
    """Write a calibration (a JSON object with at least :data:`CALIBRATION_KEYS`).

    Args:
        calibration (Mapping): E.g. :func:`calibrate_threshold`'s result with
            ``metric`` and provenance added.
        path (str): The ``.json`` file (written atomically).

    Returns:
        str: ``path``.
    """
    missing = [k for k in CALIBRATION_KEYS if k not in calibration]
    if missing:
        raise KeyError(f'a calibration needs {list(CALIBRATION_KEYS)}; missing {missing}')
    with atomic_write_path(str(path)) as tmp:
        with open(tmp, 'w') as f:
            json.dump(dict(calibration), f, indent=1, sort_keys=True)
            f.write('\n')
    return str(path)


def load_calibration(path: str) -> Dict[str, Any]:
    """Read a calibration file of :func:`save_calibration`.

    Args:
        path (str): The JSON file.

    Returns:
        dict: The calibration.

    Raises:
        DataNotFoundError: If the file does not exist.
        DataError: If it is not a calibration (not JSON, a key missing, a
            threshold that is not a finite number).
    """
    if not osp.isfile(path):
        raise DataNotFoundError(
            f'calibration file not found: {path}; write one with '
            'tools/analysis_tools/calibrate_threshold.py CONFIG CHECKPOINT --out FILE'
        )
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f'cannot read the calibration file {path}: {exc}') from None
    if not isinstance(data, dict):
        raise DataError(f'{path} holds a {type(data).__name__}, not a calibration object')
    missing = [k for k in CALIBRATION_KEYS if k not in data]
    if missing:
        raise DataError(
            f'{path} is not a calibration file: it lacks {missing} (expected the keys '
            f'{list(CALIBRATION_KEYS)}, as calibrate_threshold.py writes them)'
        )
    threshold = data['threshold']
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise DataError(f'{path}: threshold is {threshold!r}, not a number')
    if not math.isfinite(threshold):
        raise DataError(f'{path}: threshold is {threshold}, not a finite number')
    return data


def resolve_threshold(
    threshold: Union[None, float, str, Mapping[str, Any]], metric: Optional[str] = None
) -> Tuple[Optional[float], Optional[Dict[str, Any]]]:
    """A decision threshold from a number, a calibration file or a calibration dict.

    Args:
        threshold (float | str | Mapping, optional): The threshold, a
            calibration file, or a loaded calibration; None for no decision.
        metric (str, optional): The distance the threshold will be compared
            with; a calibration made with another one is refused. Defaults to
            None (not checked).

    Returns:
        tuple: ``(threshold or None, calibration dict or None)``.

    Raises:
        ConfigError: On a threshold that is not a finite number, or a
            calibration of another metric.
    """
    if threshold is None:
        return None, None
    calibration = None
    if isinstance(threshold, str):
        calibration = load_calibration(threshold)
    elif isinstance(threshold, Mapping):
        calibration = dict(threshold)
        missing = [k for k in CALIBRATION_KEYS if k not in calibration]
        if missing:
            raise ConfigError(f'a calibration needs {list(CALIBRATION_KEYS)}; missing {missing}')
    if calibration is not None:
        if metric is not None and calibration['metric'] != metric:
            raise ConfigError(
                f'the calibration was made with metric={calibration["metric"]!r}, but distances '
                f'here are {metric!r}; calibrate again with the same metric'
            )
        value = calibration['threshold']
    else:
        value = threshold
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f'threshold must be a finite number, got {value!r}')
    return float(value), calibration
