"""Loss and metric curves from MMEngine's scalar log.

MMEngine's ``LocalVisBackend`` writes ``<work_dir>/<timestamp>/vis_data/
scalars.json``: one JSON object per line. Training lines carry ``step`` (the
iteration), ``lr``, the losses, ``epoch`` (epoch-based runs), ``iter``,
``time``...; validation lines carry the metrics (e.g. ``reid/mAP``) with
``step`` = the epoch (or the iteration in iteration-based runs).
"""

import glob
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError

__all__ = [
    'DEFAULT_METRIC_KEYS',
    'find_scalars_file',
    'load_scalars',
    'collect_curves',
    'plot_curves',
    'check_out_file',
    'ScalarKeyError',
]

#: Metric keys drawn by default (when present), besides every loss key.
DEFAULT_METRIC_KEYS = ('reid/mAP', 'reid/Rank-1')

Curve = Tuple[List[float], List[float], str]


class ScalarKeyError(DataError, KeyError):
    """Keys asked for (or the default ones) are not in a scalar log.

    A user error and a ``KeyError``; its message is printed unquoted.
    """

    __str__ = Exception.__str__


def find_scalars_file(path: str) -> str:
    """Locate the scalar log of a run.

    Args:
        path (str): A ``scalars.json`` file, a ``vis_data`` folder, a run
            folder ``<work_dir>/<timestamp>`` or a work dir (its latest run,
            by timestamp folder name, is used).

    Returns:
        str: The ``scalars.json`` path.

    Raises:
        DataNotFoundError: If no scalar log is found (a
            ``FileNotFoundError``).
    """
    if osp.isfile(path):
        return path
    candidates = [
        osp.join(path, 'scalars.json'),
        osp.join(path, 'vis_data', 'scalars.json'),
    ]
    for candidate in candidates:
        if osp.isfile(candidate):
            return candidate
    runs = sorted(glob.glob(osp.join(glob.escape(path), '*', 'vis_data', 'scalars.json')))
    if runs:
        return runs[-1]
    raise DataNotFoundError(
        f'no scalar log found at {path}: expected a scalars.json file, or a work dir holding '
        '<timestamp>/vis_data/scalars.json (written by LocalVisBackend; see '
        'vis_backends in configs/_base_/default_runtime.py)'
    )


def load_scalars(path: str) -> List[dict]:
    """Read the records of a scalar log (one JSON object per line).

    Args:
        path (str): See :func:`find_scalars_file`.

    Returns:
        list[dict]: The records, in file order.

    Raises:
        DataNotFoundError: If no scalar log is found.
        DataError: If a line is not a JSON object (a ``ValueError``).
    """
    path = find_scalars_file(path)
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f'{path}:{lineno}: not a JSON line ({exc}); expected the scalars.json of '
                    'LocalVisBackend (one JSON object per line)'
                ) from None
            if not isinstance(record, dict):
                raise DataError(f'{path}:{lineno}: expected a JSON object per line')
            records.append(record)
    return records


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def collect_curves(
    records: Sequence[dict], keys: Optional[Sequence[str]] = None
) -> Dict[str, Curve]:
    """Turn scalar records into one curve per key.

    Args:
        records (Sequence[dict]): Records of :func:`load_scalars`.
        keys (Sequence[str], optional): Keys to collect. Defaults to None:
            every key containing ``'loss'`` plus :data:`DEFAULT_METRIC_KEYS`
            that are present.

    Returns:
        dict: ``key -> (steps, values, x_label)``; ``x_label`` is
        ``'iteration'`` for training records (those with ``lr``) and
        ``'epoch'`` for validation records of epoch-based runs.

    Raises:
        ScalarKeyError: If a requested key is in no record, or (default
            keys) the log has no loss or metric key at all (a ``KeyError``).
    """
    available: List[str] = []
    for record in records:
        available += [k for k, v in record.items() if k not in available and _is_number(v)]
    if keys is None:
        keys = [k for k in available if 'loss' in k]
        keys += [k for k in DEFAULT_METRIC_KEYS if k in available]
        if not keys:
            raise ScalarKeyError(
                f'the scalar log holds no loss key and none of {list(DEFAULT_METRIC_KEYS)}; '
                f'available keys: {available}'
            )
    else:
        absent = [k for k in keys if k not in available]
        if absent:
            raise ScalarKeyError(
                f'keys {absent} are not in the scalar log; available keys: {available}'
            )
    by_epoch = any('epoch' in r for r in records if 'lr' in r)
    curves: Dict[str, Curve] = {}
    for key in keys:
        steps, values, train = [], [], False
        for i, record in enumerate(records):
            value = record.get(key)
            if not _is_number(value):
                continue
            steps.append(float(record.get('step', i)))
            values.append(float(value))
            train = train or 'lr' in record
        x_label = 'iteration' if train or not by_epoch else 'epoch'
        curves[key] = (steps, values, x_label)
    return curves


def plot_curves(
    path: str,
    out_file: str,
    keys: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    dpi: int = 100,
) -> List[str]:
    """Draw the curves of a run's scalar log into an image file.

    One subplot per key, against its ``step`` (iterations for training
    keys, epochs for validation metrics). Uses matplotlib's Agg canvas, so
    no display is needed.

    Args:
        path (str): A work dir, run folder or ``scalars.json`` (see
            :func:`find_scalars_file`).
        out_file (str): The picture to write (e.g. ``curves.png``).
        keys (Sequence[str], optional): Keys to draw. Defaults to None
            (every loss key plus ``reid/mAP`` and ``reid/Rank-1``).
        title (str, optional): Figure title. Defaults to None (the log path).
        dpi (int): Resolution. Defaults to 100.

    Returns:
        list[str]: The keys drawn.

    Raises:
        ConfigError: If ``out_file`` has an extension matplotlib cannot
            write, is a folder, or cannot be written.
        DataNotFoundError: If no scalar log is found.
        ScalarKeyError: If a key is missing (see :func:`collect_curves`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_out_file(out_file)
    log_file = find_scalars_file(path)
    curves = collect_curves(load_scalars(log_file), keys)
    num = len(curves)
    cols = 1 if num == 1 else 2
    rows = math.ceil(num / cols)
    fig = Figure(figsize=(6 * cols, 3.2 * rows), dpi=dpi)
    FigureCanvasAgg(fig)
    for i, (key, (steps, values, x_label)) in enumerate(curves.items(), 1):
        ax = fig.add_subplot(rows, cols, i)
        ax.plot(steps, values, marker='o' if len(steps) <= 30 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or log_file, fontsize=9)
    fig.tight_layout()
    try:
        os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
        fig.savefig(out_file)
    except OSError as exc:
        raise ConfigError(
            f'cannot write the picture {out_file}: {exc.strerror or exc}; choose another path'
        ) from None
    return list(curves)


def check_out_file(out_file: str) -> None:
    """Refuse a picture path matplotlib cannot write, before anything is drawn.

    Args:
        out_file (str): The picture to write.

    Raises:
        ConfigError: If it is a folder or its extension is not a format of
            matplotlib's Agg canvas (``png``, ``pdf``, ``svg``, ...).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if osp.isdir(out_file):
        raise ConfigError(f'{out_file} is a folder; expected a picture file, e.g. curves.png')
    formats = FigureCanvasAgg.get_supported_filetypes()
    ext = osp.splitext(out_file)[1].lower().lstrip('.')
    if ext and ext not in formats:  # no extension: matplotlib writes PNG
        raise ConfigError(
            f'cannot write the picture {out_file}: unknown extension {ext!r}; '
            f'expected one of {", ".join(sorted(formats))}, e.g. curves.png'
        )
