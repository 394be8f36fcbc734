"""Check a dataset before training on it: list every split, decode every image.

:func:`verify_dataset` takes dataset configs (or built datasets), lists the
samples of each one (built with an empty pipeline) and decodes every image
file they name in parallel, with the decoder of the training pipeline
(:func:`~mmdmpt.datasets.transforms.loading.decode_bgr`, truncated JPEG / PNG
files included). It collects *all* problems at once instead of stopping at the
first, so a bad file is found before training rather than mid-epoch:

- a split that cannot be listed (missing folder, unparsable name, image
  without its other modalities, ...): the listing error is reported, naming
  the split, and the split's folders are then scanned so that the image files
  there are still decoded and every unpaired modality file is named;
- a file that is missing, unreadable, empty, truncated or not an image;
- a strip (RGBNT100: the modalities side by side in one file) whose width is
  not ``num_tiles`` tiles of the pipeline's ``tile_width`` (or, without a tile
  width, not a multiple of ``num_tiles``), the rule
  :class:`~mmdmpt.datasets.LoadMultiModalImages` applies.

Every distinct file is read once, however many samples or splits name it.
``tools/misc/verify_dataset.py`` runs this on a config's dataloaders.
"""

import copy
import os
import os.path as osp
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from mmengine import fileio
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from mmdmpt.registry import DATASETS
from mmdmpt.utils.errors import user_error_message

from .base import is_image_file
from .transforms.loading import LoadMultiModalImages, decode_bgr

__all__ = ['BadFile', 'SplitReport', 'VerifyReport', 'default_num_workers', 'verify_dataset']

#: Official split folders read by each dataset split.
_PARTS = {
    'train': ('train',),
    'val': ('train',),
    'query': ('query',),
    'gallery': ('gallery',),
    'test': ('query', 'gallery'),
}
#: Dataset wrapper keys that hold the datasets to check.
_WRAPPED = ('datasets', 'dataset')

_StripSpec = Optional[Tuple[int, Optional[int]]]  # (num_tiles, tile_width) or None
_Result = Tuple[Optional[Tuple[int, int]], Optional[str]]  # ((h, w), None) or (None, reason)


@dataclass
class BadFile:
    """A file that would fail to load, and why.

    Attributes:
        path (str): The file (for a missing modality folder, the folder).
        reason (str): What is wrong, e.g. ``'truncated JPEG (no end-of-image
            marker)'`` or ``'file not found'``.
    """

    path: str
    reason: str


@dataclass
class SplitReport:
    """The outcome of one dataset (one split of a config).

    Attributes:
        name (str): The label given (e.g. ``'train'`` or ``'val, test'``
            when two dataloaders read the same dataset).
        description (str): Dataset type, split and root.
        num_samples (int, optional): Samples listed; None when the split
            could not be listed.
        num_files (int): Distinct image files of the split (those found by
            scanning its folders when it could not be listed).
        num_decoded (int): Files decoded for this split (files already
            decoded for an earlier split are not read again).
        seconds (float): Wall time of listing and decoding.
        listing_error (str, optional): Why the split could not be listed.
        bad_files (list[BadFile]): Problem files of the split, sorted by path.
    """

    name: str
    description: str
    num_samples: Optional[int] = None
    num_files: int = 0
    num_decoded: int = 0
    seconds: float = 0.0
    listing_error: Optional[str] = None
    bad_files: List[BadFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """bool: The split lists and every file loads."""
        return self.listing_error is None and not self.bad_files

    @property
    def files_per_second(self) -> float:
        """float: Files decoded per second of wall time (0 when none)."""
        return self.num_decoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_dataset`.

    Attributes:
        splits (list[SplitReport]): One per distinct dataset, in input order.
        num_files (int): Distinct files over all splits.
        bad_files (list[BadFile]): Distinct problem files over all splits,
            sorted by path.
        num_workers (int): Decoding threads used.
        seconds (float): Total wall time.
    """

    splits: List[SplitReport]
    num_files: int
    bad_files: List[BadFile]
    num_workers: int
    seconds: float

    @property
    def ok(self) -> bool:
        """bool: Every split lists and every file loads."""
        return all(s.ok for s in self.splits)

    @property
    def files_per_second(self) -> float:
        """float: Distinct files decoded per second of total wall time."""
        return self.num_files / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        """The report as plain data (JSON-serialisable).

        Returns:
            dict: ``ok``, ``num_files``, ``num_workers``, ``seconds``,
            ``files_per_second``, ``bad_files`` (dicts of ``path`` and
            ``reason``) and ``splits`` (their fields, ``ok`` and
            ``files_per_second``).
        """
        splits = []
        for s in self.splits:
            splits.append(
                dict(
                    name=s.name,
                    description=s.description,
                    num_samples=s.num_samples,
                    num_files=s.num_files,
                    num_decoded=s.num_decoded,
                    seconds=s.seconds,
                    files_per_second=s.files_per_second,
                    listing_error=s.listing_error,
                    bad_files=[dict(path=b.path, reason=b.reason) for b in s.bad_files],
                    ok=s.ok,
                )
            )
        return dict(
            ok=self.ok,
            num_files=self.num_files,
            num_workers=self.num_workers,
            seconds=self.seconds,
            files_per_second=self.files_per_second,
            bad_files=[dict(path=b.path, reason=b.reason) for b in self.bad_files],
            splits=splits,
        )

    def format(self) -> str:
        """A summary table, then every listing error and every bad file.

        Returns:
            str: Text lines (no trailing newline).
        """
        header = ['split', 'dataset', 'samples', 'files', 'bad', 'seconds', 'files/s']
        rows = []
        for s in self.splits:
            bad = len(s.bad_files) + (s.listing_error is not None)
            rows.append(
                [
                    s.name,
                    s.description,
                    '-' if s.num_samples is None else str(s.num_samples),
                    str(s.num_files),
                    str(bad),
                    f'{s.seconds:.2f}',
                    f'{s.files_per_second:.0f}',
                ]
            )
        num_bad = len(self.bad_files) + sum(s.listing_error is not None for s in self.splits)
        rows.append(
            [
                'all',
                f'{self.num_workers} threads',
                '',
                str(self.num_files),
                str(num_bad),
                f'{self.seconds:.2f}',
                f'{self.files_per_second:.0f}',
            ]
        )
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

        def fmt(cells):
            return ' | '.join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        rule = '-' * len(fmt(['-' * w for w in widths]))
        lines = [rule, fmt(header), rule, *(fmt(r) for r in rows[:-1]), rule, fmt(rows[-1]), rule]
        errors = [s for s in self.splits if s.listing_error is not None]
        if errors:
            lines.append(f'{len(errors)} split(s) could not be listed:')
            lines += [f'  [{s.name}] {s.listing_error}' for s in errors]
        if self.bad_files:
            lines.append(f'{len(self.bad_files)} bad file(s):')
            lines += [f'  {b.path}: {b.reason}' for b in self.bad_files]
        if self.ok:
            lines.append(f'OK: {self.num_files} files in {len(self.splits)} split(s) load.')
        return '\n'.join(lines)


def default_num_workers() -> int:
    """The default number of decoding threads: twice the usable CPU cores, at most 16.

    Decoding releases the GIL (OpenCV) and reading waits on the disk, so a
    few more threads than cores keep the cores busy.

    Returns:
        int: The thread count.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(16, 2 * cpus))


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
def _plain(cfg: Any) -> Any:
    """A ConfigDict (or nested one) as plain dicts and lists, for comparison."""
    to_dict = getattr(cfg, 'to_dict', None)
    if callable(to_dict):
        return to_dict()
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _leaves(name: str, item: Any) -> List[Tuple[str, Any]]:
    """Unwrap dataset wrapper configs (``datasets=[...]`` / ``dataset=dict(...)``)."""
    if isinstance(item, Mapping):
        inner = item.get('datasets')
        if isinstance(inner, (list, tuple)):
            out = []
            for i, sub in enumerate(inner):
                out += _leaves(f'{name}[{i}]', sub)
            return out
        inner = item.get('dataset')
        if isinstance(inner, Mapping):
            return _leaves(name, inner)
    return [(name, item)]


def _entries(datasets: Any) -> List[Tuple[str, Any]]:
    """``(label, config or dataset)`` pairs, equal configs merged."""
    if isinstance(datasets, Mapping) and 'type' not in datasets:
        items = list(datasets.items())
    elif isinstance(datasets, (list, tuple)):
        items = [(f'dataset {i}', d) for i, d in enumerate(datasets)]
    else:
        items = [('dataset', datasets)]
    leaves = []
    for name, item in items:
        leaves += _leaves(str(name), item)
    merged: List[Tuple[List[str], Any, Any]] = []  # labels, item, comparison key
    for name, item in leaves:
        key = None if _is_dataset(item) else _plain(item)
        for labels, other, other_key in merged:
            if item is other or (key is not None and key == other_key):
                labels.append(name)
                break
        else:
            merged.append(([name], item, key))
    return [(', '.join(labels), item) for labels, item, _ in merged]


def _is_dataset(item: Any) -> bool:
    return hasattr(item, 'get_data_info') and hasattr(item, 'full_init')


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t.rpartition('.')[2]
    return getattr(t, '__name__', str(t))


def _loader_settings(item: Any) -> Tuple[Optional[int], Optional[dict]]:
    """``tile_width`` and ``backend_args`` of the pipeline's LoadMultiModalImages."""
    if _is_dataset(item):
        for t in getattr(getattr(item, 'pipeline', None), 'transforms', []):
            if isinstance(t, LoadMultiModalImages):
                return t.tile_width, t.backend_args
        return None, None
    for t in item.get('pipeline') or ():
        if isinstance(t, Mapping) and _type_name(t.get('type')) == 'LoadMultiModalImages':
            return t.get('tile_width'), t.get('backend_args')
    return None, None


def _describe(item: Any) -> str:
    if _is_dataset(item):
        name = getattr(item, 'dataset_name', type(item).__name__)
        split = getattr(item, 'split', None)
        root = getattr(item, 'data_root', '')
    else:
        name = _type_name(item.get('type'))
        split = item.get('split')
        root = item.get('data_root', '')
    text = name if split is None else f'{name} {split!r}'
    return f'{text} at {root}' if root else text


def _build(item: Any) -> Any:
    """A dataset from a config, with no pipeline and without listing it yet."""
    cfg = copy.deepcopy(_plain(item))
    cfg['pipeline'] = []
    cfg['lazy_init'] = True
    cfg['serialize_data'] = False
    return DATASETS.build(cfg)


def _error_text(exc: BaseException) -> str:
    """One line naming what went wrong (wrappers of MMEngine's registry removed)."""
    text = ' '.join(user_error_message(exc).split()) or type(exc).__name__
    if not isinstance(exc, (OSError, ValueError)):
        text = f'{type(exc).__name__}: {text}'
    return text


# --------------------------------------------------------------------------- #
# Listing
# --------------------------------------------------------------------------- #
def _sample_files(
    dataset: Any, tile_width: Optional[int]
) -> Tuple[int, Dict[str, _StripSpec], List[BadFile]]:
    """Files named by the listed samples, with the strip spec of each."""
    files: Dict[str, _StripSpec] = {}
    bad: List[BadFile] = []
    num = len(dataset)
    for i in range(num):
        info = dataset.get_data_info(i)
        paths = info.get('img_paths')
        if paths is None:
            paths = [info['img_path']] if info.get('img_path') is not None else []
        tiles = info.get('tile_indices')
        spec = None
        if tiles is not None:
            num_tiles = info.get('num_tiles')
            if num_tiles is None:
                bad += [BadFile(p, 'tile_indices given without num_tiles') for p in paths]
                continue
            spec = (int(num_tiles), tile_width)
        for path in paths:
            if path:  # None / '': a modality this sample lacks in the data
                files.setdefault(path, spec)
    return num, files, bad


def _scan_folders(
    dataset: Any, tile_width: Optional[int]
) -> Tuple[Dict[str, _StripSpec], List[BadFile]]:
    """Image files under the folders of a split that could not be listed.

    Also names every image that lacks a file of the same name in another
    modality folder, and every missing modality folder beside present ones.
    """
    split_folders = getattr(dataset, 'SPLIT_FOLDERS', None)
    split = getattr(dataset, 'split', None)
    if not split_folders or split not in _PARTS or not getattr(dataset, 'data_root', None):
        return {}, []
    num_tiles = getattr(dataset, 'NUM_TILES', None)
    modality_folders = getattr(dataset, 'MODALITY_FOLDERS', {}) or {}
    modalities = tuple(getattr(dataset, 'modalities', ()))
    roots = dict.fromkeys(
        osp.join(dataset.data_root, split_folders[p]) for p in _PARTS[split] if p in split_folders
    )
    files: Dict[str, _StripSpec] = {}
    bad: List[BadFile] = []
    spec = (int(num_tiles), tile_width) if num_tiles else None
    for root in roots:
        if not osp.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):  # links to folders are not followed
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            for name in sorted(filenames):
                if is_image_file(name):
                    files[osp.join(dirpath, name)] = spec
            if modalities and all(m in modality_folders for m in modalities):
                bad += _unpaired(dirpath, dirnames, modalities, modality_folders)
    return files, bad


def _unpaired(
    dirpath: str, dirnames: List[str], modalities: Sequence[str], folders: Mapping[str, str]
) -> List[BadFile]:
    """Missing modality folders and files of a folder holding modality folders."""
    present = [m for m in modalities if folders[m] in dirnames]
    if not present:
        return []
    bad = [
        BadFile(osp.join(dirpath, folders[m]), f'folder of modality {m!r} not found')
        for m in modalities
        if m not in present
    ]
    names: Dict[str, set] = {}
    for m in present:
        folder = osp.join(dirpath, folders[m])
        with os.scandir(folder) as entries:
            names[m] = {e.name for e in entries if is_image_file(e.name)}
    for name in sorted(set().union(*names.values())):
        owner = next(m for m in present if name in names[m])
        for m in present:
            if name not in names[m]:
                bad.append(
                    BadFile(
                        osp.join(dirpath, folders[m], name),
                        f'missing {m!r} image (paired by file name with '
                        f'{osp.join(dirpath, folders[owner], name)})',
                    )
                )
    return bad


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #
def _read(path: str, backend_args: Optional[dict]) -> bytes:
    if backend_args is None:
        with open(path, 'rb') as f:
            return f.read()
    return fileio.get(path, backend_args=backend_args)


def _check_file(path: str, backend_args: Optional[dict]) -> _Result:
    """Read and decode one file as the training pipeline does."""
    try:
        buf = _read(path, backend_args)
    except FileNotFoundError:
        return None, 'file not found'
    except OSError as exc:
        return None, f'cannot read the file ({exc.strerror or exc})'
    try:
        img = decode_bgr(buf, path, check_complete=True)
    except ValueError as exc:
        text = str(exc)
        prefix = f'cannot decode image {path}: '
        return None, text[len(prefix) :] if text.startswith(prefix) else text
    except Exception as exc:  # a checker reports every file, it does not stop
        return None, _error_text(exc)
    return (int(img.shape[0]), int(img.shape[1])), None


def _strip_problem(width: int, spec: _StripSpec) -> Optional[str]:
    """The loader's strip width rule (``LoadMultiModalImages``)."""
    if spec is None:
        return None
    num_tiles, tile_width = spec
    if tile_width is not None:
        if width != num_tiles * tile_width:
            return (
                f'strip is {width} px wide; expected {num_tiles} tiles x {tile_width} px = '
                f'{num_tiles * tile_width} px'
            )
    elif width % num_tiles:
        return (
            f'strip is {width} px wide; expected a multiple of {num_tiles} '
            f'({num_tiles} tiles of equal width)'
        )
    return None


class _Progress:
    """A throttled :class:`mmengine.utils.ProgressBar` on stderr."""

    def __init__(self, total: int, enabled: bool, interval: float = 0.2) -> None:
        self.bar = ProgressBar(total, file=sys.stderr) if enabled and total else None
        self.pending = 0
        self.interval = interval
        self.last = time.perf_counter()

    def update(self) -> None:
        if self.bar is None:
            return
        self.pending += 1
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.bar.update(self.pending)
            self.pending, self.last = 0, now

    def close(self) -> None:
        if self.bar is None:
            return
        if self.pending:
            self.bar.update(self.pending)
        sys.stderr.write('\n')
        sys.stderr.flush()


def _decode_all(
    paths: List[str],
    pool: ThreadPoolExecutor,
    check: Callable[[str], _Result],
    progress: bool,
) -> Dict[str, _Result]:
    results: Dict[str, _Result] = {}
    bar = _Progress(len(paths), progress)
    futures = {pool.submit(check, p): p for p in paths}
    for future in as_completed(futures):
        results[futures[future]] = future.result()
        bar.update()
    bar.close()
    return results


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def verify_dataset(
    datasets: Union[Mapping[str, Any], Sequence[Any], Any],
    num_workers: Optional[int] = None,
    progress: bool = True,
) -> VerifyReport:
    """List every sample and decode every image file of one or more datasets.

    Each dataset is listed with an empty pipeline; every distinct image file
    is then read and decoded once, in parallel threads, with
    :func:`~mmdmpt.datasets.transforms.loading.decode_bgr` (the training
    decoder, ``check_complete=True``: a JPEG without its end-of-image marker
    or a PNG without its ``IEND`` chunk is reported as truncated even though
    OpenCV would decode it partially). Strips are checked against the
    ``tile_width`` of the ``LoadMultiModalImages`` step of the dataset's
    pipeline (or, without one, for a width that ``num_tiles`` divides). All
    problems are collected; nothing is raised for bad data.

    Args:
        datasets (Mapping | Sequence | dict | BaseDataset): A dataset config
            (a dict with ``type``) or a built dataset, a sequence of them, or
            a mapping ``label -> config or dataset`` (e.g. ``{'train': ...,
            'val': ..., 'test': ...}``). Wrapper configs (``dataset=`` /
            ``datasets=``) are unwrapped; equal configs are checked once,
            their labels joined.
        num_workers (int, optional): Decoding threads. None means
            :func:`default_num_workers`. Defaults to None.
        progress (bool): Show a progress bar per dataset on stderr. Defaults
            to True.

    Returns:
        VerifyReport: Per dataset the samples, files, listing error, bad
        files, seconds and files/s; ``ok`` is True when nothing is wrong.

    Raises:
        ValueError: If ``num_workers`` is not positive.
    """
    if num_workers is None:
        num_workers = default_num_workers()
    if int(num_workers) < 1:
        raise ValueError(f'num_workers must be >= 1, got {num_workers}')
    num_workers = int(num_workers)
    start = time.perf_counter()
    results: Dict[str, _Result] = {}  # path -> outcome, shared by the splits
    all_files: Dict[str, None] = {}
    all_bad: Dict[Tuple[str, str], BadFile] = {}
    reports = []
    with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix='verify') as pool:
        for label, item in _entries(datasets):
            report, files = _check_split(label, item, pool, results, progress)
            all_files.update(dict.fromkeys(files))
            all_bad.update({(b.path, b.reason): b for b in report.bad_files})
            reports.append(report)
            samples = '?' if report.num_samples is None else report.num_samples
            print_log(
                f'verify_dataset [{label}] {report.description}: {samples} samples, '
                f'{report.num_files} files, {len(report.bad_files)} bad'
                + (', not listable' if report.listing_error else '')
                + f' ({report.seconds:.2f} s, {report.files_per_second:.0f} files/s)',
                logger='current',
            )
    return VerifyReport(
        splits=reports,
        num_files=len(all_files),
        bad_files=sorted(all_bad.values(), key=lambda b: (b.path, b.reason)),
        num_workers=num_workers,
        seconds=time.perf_counter() - start,
    )


def _check_split(
    label: str,
    item: Any,
    pool: ThreadPoolExecutor,
    results: Dict[str, _Result],
    progress: bool,
) -> Tuple[SplitReport, Dict[str, _StripSpec]]:
    """List one dataset and decode its files not decoded yet (into ``results``)."""
    t0 = time.perf_counter()
    report = SplitReport(name=label, description=type(item).__name__)
    dataset, files, bad = None, {}, []
    tile_width, backend_args = None, None
    try:
        report.description = _describe(item)
        tile_width, backend_args = _loader_settings(item)
        dataset = item if _is_dataset(item) else _build(item)
        report.description = _describe(dataset)
        dataset.full_init()
        report.num_samples, files, bad = _sample_files(dataset, tile_width)
    except Exception as exc:  # reported; the folders are scanned instead
        report.listing_error = _error_text(exc)
        if dataset is not None:
            files, bad = _scan_folders(dataset, tile_width)
    todo = [p for p in files if p not in results]
    check = partial(_check_file, backend_args=backend_args)
    results.update(_decode_all(todo, pool, check, progress))
    for path, spec in files.items():
        shape, reason = results[path]
        if reason is None:
            reason = _strip_problem(shape[1], spec)
        if reason is not None:
            bad.append(BadFile(path, reason))
    unique = {(b.path, b.reason): b for b in bad}
    report.bad_files = sorted(unique.values(), key=lambda b: (b.path, b.reason))
    report.num_files = len(files)
    report.num_decoded = len(todo)
    report.seconds = time.perf_counter() - t0
    return report, files
