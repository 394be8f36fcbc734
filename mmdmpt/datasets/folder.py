"""Multi-modal ReID data of one's own: a folder layout or an annotation file.

:class:`MultiModalReIDFolder` reads any set of modalities (one or more, any
lowercase names) from one of two layouts:

1. **Folders**: ``<data_root>/<split>/<modality folder>/<file>``, the files of
   one sample paired by file name (without the extension, so that e.g. RGB
   ``.jpg`` and depth ``.png`` files pair); identity, camera and scene are
   read from the name by a regular expression with named groups
   (``name_pattern``).
2. **An annotation file** (CSV): one row per sample with the columns
   ``split``, ``pid``, ``camid``, optionally ``sceneid``, and one path column
   per modality (named after the modality, relative to ``data_root``); an
   empty cell is a modality the sample lacks.

A sample may lack modalities (a file absent from a modality folder, an empty
cell): its path is None and the loader marks it absent
(``modality_mask``); the summary counts such samples.
"""

import csv
import logging
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log

from mmdmpt.registry import DATASETS
from mmdmpt.structures import REMOVAL_RULES, check_modalities
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError

from .base import BaseMultiModalReIDDataset, list_image_names

__all__ = ['MultiModalReIDFolder', 'parse_name_pattern']

#: The splits a folder tree or an annotation file holds.
FOLDER_SPLITS: Tuple[str, ...] = ('train', 'query', 'gallery')
_INT = re.compile(r'-?[0-9]+')
_NO_IDS_HINT = (
    'ids are only optional for a gallery read without splits (split=None, e.g. a gallery of '
    'tools/search.py)'
)


def parse_name_pattern(name_pattern: str) -> re.Pattern:
    r"""Compile ``name_pattern`` and check its named groups.

    Args:
        name_pattern (str): A regular expression with the named groups
            ``pid`` (identity) and, where the data have them, ``camid`` and
            ``sceneid``, e.g. ``r'(?P<pid>\d+)_c(?P<camid>\d+)_\d+'``.

    Returns:
        re.Pattern: The compiled expression.

    Raises:
        ConfigError: On an invalid expression or one without a ``pid`` group.
    """
    if not isinstance(name_pattern, str) or not name_pattern:
        raise ConfigError(
            f'dataset.name_pattern must be a regular expression string, got {name_pattern!r}'
        )
    try:
        regex = re.compile(name_pattern)
    except re.error as exc:
        raise ConfigError(
            f'dataset.name_pattern "{name_pattern}" is not a valid regular expression: {exc}'
        ) from None
    if 'pid' not in regex.groupindex:
        raise ConfigError(
            f'dataset.name_pattern "{name_pattern}" has no named group for the identity: '
            r"write it as (?P<pid>...), e.g. r'(?P<pid>\d+)_c(?P<camid>\d+)_\d+'"
        )
    return regex


@DATASETS.register_module()
class MultiModalReIDFolder(BaseMultiModalReIDDataset):
    r"""Multi-modal ReID data of one's own, from folders or an annotation file.

    Folder layout (``ann_file=None``)::

        <data_root>/train/<modality folder>/<file>
        <data_root>/query/<modality folder>/<file>
        <data_root>/gallery/<modality folder>/<file>

    ``modality_dirs`` names each modality's folder (default: the modality's
    own name). Files of one sample share their name without the extension in
    every modality folder; a file missing from a folder is a modality the
    sample lacks (``allow_missing=False`` makes it an error). ``name_pattern``
    is matched against the whole name without its extension (or, failing
    that, with it); its groups ``pid``, ``camid`` and ``sceneid`` give the
    identity, the camera and the scene (integers, kept as written).

    Annotation layout (``ann_file='annotations.csv'``, relative to
    ``data_root``): a CSV with a header row and the columns ``split``
    (``train``, ``query`` or ``gallery``), ``pid``, ``camid``, optionally
    ``sceneid``, and one column per modality holding the image path relative
    to ``data_root`` (an empty cell: the sample lacks the modality).

    Splits: ``'train'``, ``'query'``, ``'gallery'``, ``'test'`` (query then
    gallery), ``'val'`` (held-out training ids, ``val_fraction > 0``), as for
    the benchmarks (:class:`BaseMultiModalReIDDataset`), and ``None``: one
    gallery without split level (``<data_root>/<modality folder>/<file>``,
    or every row of the annotation file), e.g. a gallery of one's own images
    for ``tools/search.py``; only there may ids be unknown (``-1``: no
    ``name_pattern``, no ``pid`` column or empty cells).

    The removal rule of the evaluation is stated here and reaches the metric
    through the metainfo: ``'camera'`` (same id and same camera hidden, the
    benchmarks' rule; needs cameras), ``'scene'`` (same id and same scene;
    needs scenes) or ``'none'`` (nothing hidden: data without cameras, where
    queries must not also be in the gallery).

    Args:
        data_root (str): The dataset root.
        split (str, optional): ``'train'``, ``'query'``, ``'gallery'``,
            ``'test'``, ``'val'`` or None (see above). Defaults to
            ``'train'``.
        modalities (Sequence[str]): The modality names, in the order of the
            images (any lowercase names, at least one; e.g. ``('rgb',
            'depth')``). Defaults to None: an error unless the config states
            them (its ``modalities`` variable fills this in).
        modality_dirs (Mapping[str, str], optional): Modality -> folder name
            (folder layout). Defaults to None (each modality's own name).
        name_pattern (str, optional): Regular expression with named groups
            ``pid`` and optionally ``camid``, ``sceneid`` (folder layout).
            Defaults to None (only for ``split=None``: ids unknown).
        ann_file (str, optional): The annotation CSV, relative to
            ``data_root``. Defaults to None (the folder layout).
        removal_rule (str): ``'camera'``, ``'scene'`` or ``'none'``. Defaults
            to ``'camera'``.
        pipeline (Sequence[dict | Callable]): Transforms. Defaults to ``()``.
        split_dirs (Mapping[str, str], optional): Folder of the ``'train'``,
            ``'query'`` and ``'gallery'`` splits (folder layout), or the
            ``split`` value of each in the annotation file. Defaults to None
            (the split names).
        allow_missing (bool): Accept samples lacking a modality. Defaults to
            True.
        dataset_name (str, optional): Shown in the summary and metainfo.
            Defaults to None (``'MultiModalReIDFolder'``).
        **kwargs: See :class:`BaseMultiModalReIDDataset` (``val_fraction``,
            ``val_seed``, ``test_mode``, ``lazy_init``, ``indices``, ...).

    Examples:
        >>> ds = MultiModalReIDFolder(
        ...     'data/my_cameras', split='train', modalities=('rgb', 'depth'),
        ...     name_pattern=r'(?P<pid>\d+)_c(?P<camid>\d+)_\d+')
    """

    DATASET_NAME = 'MultiModalReIDFolder'
    SPLIT_FOLDERS = {'train': 'train', 'query': 'query', 'gallery': 'gallery'}
    ALLOW_NO_SPLIT = True

    def __init__(
        self,
        data_root: str,
        split: Optional[str] = 'train',
        modalities: Optional[Sequence[str]] = None,
        modality_dirs: Optional[Mapping[str, str]] = None,
        name_pattern: Optional[str] = None,
        ann_file: Optional[str] = None,
        removal_rule: str = 'camera',
        pipeline: Sequence[Union[dict, Callable]] = (),
        split_dirs: Optional[Mapping[str, str]] = None,
        allow_missing: bool = True,
        dataset_name: Optional[str] = None,
        **kwargs,
    ) -> None:
        self._name = str(dataset_name) if dataset_name else self.DATASET_NAME
        if modalities is None:
            raise ConfigError(
                f"{self._name}: state the modalities, e.g. modalities=('rgb', 'depth') (the "
                "config's `modalities` variable fills dataset.modalities in)"
            )
        modalities = check_modalities(modalities, 'dataset.modalities')
        if removal_rule not in REMOVAL_RULES:
            raise ConfigError(
                f'{self._name}: removal_rule={removal_rule!r}; expected one of {REMOVAL_RULES} '
                "('camera': same id and same camera hidden, 'scene': same id and same scene, "
                "'none': nothing hidden, for data without cameras)"
            )
        self._removal_rule = removal_rule
        dirs = dict(modality_dirs or {})
        unknown = sorted(set(dirs) - set(modalities))
        if unknown:
            raise ConfigError(
                f'{self._name}: modality_dirs names {unknown}, which are not among the '
                f'modalities {modalities}'
            )
        self.modality_dirs = {m: str(dirs.get(m, m)) for m in modalities}
        splits = dict(split_dirs or {})
        bad = sorted(set(splits) - set(FOLDER_SPLITS))
        if bad:
            raise ConfigError(
                f'{self._name}: split_dirs has the keys {bad}; expected some of {FOLDER_SPLITS}'
            )
        self.split_dirs = {s: str(splits.get(s, s)) for s in FOLDER_SPLITS}
        self.SPLIT_FOLDERS = dict(self.split_dirs)
        self.ann_file_name = ann_file
        self.allow_missing = bool(allow_missing)
        self.name_pattern = name_pattern
        self._regex = None if name_pattern is None else parse_name_pattern(name_pattern)
        if ann_file is None:
            self._check_pattern(split)
        super().__init__(data_root, split=split, modalities=modalities, pipeline=pipeline, **kwargs)

    # ------------------------------------------------------------------ #
    # Settings
    # ------------------------------------------------------------------ #
    @property
    def dataset_name(self) -> str:
        """str: The name shown in the summary and the metainfo."""
        return getattr(self, '_name', self.DATASET_NAME)

    @property
    def has_scenes(self) -> bool:
        """bool: Samples carry ``sceneid`` (only with the scene rule)."""
        return self._removal_rule == 'scene'

    @property
    def removal_rule(self) -> str:
        """str: The removal rule stated in the config."""
        return self._removal_rule

    def _check_pattern(self, split: Optional[str]) -> None:
        """The folder layout's name pattern must give what the split and rule need."""
        if self._regex is None:
            if split is not None:
                raise ConfigError(
                    f'{self._name}: split {split!r} needs identities: set dataset.name_pattern, '
                    r'a regular expression with a (?P<pid>...) group, e.g. '
                    r"r'(?P<pid>\d+)_c(?P<camid>\d+)_\d+' (or use an annotation file, "
                    f'dataset.ann_file); {_NO_IDS_HINT}'
                )
            return
        groups = self._regex.groupindex
        need = {'camera': 'camid', 'scene': 'sceneid'}.get(self._removal_rule)
        if need is not None and need not in groups and split is not None:
            raise ConfigError(
                f'{self._name}: removal_rule={self._removal_rule!r} needs a (?P<{need}>...) group '
                f'in dataset.name_pattern "{self.name_pattern}"; for data without cameras use '
                "removal_rule='none'"
            )

    def _check_not_empty(self, records: List[dict], split: str) -> None:
        if records:
            return
        if self.ann_file_name is None:
            super()._check_not_empty(records, split)
            return
        raise DataError(
            f'{self._name}: split {split!r} is empty: no row of {self._annotation_path()} has '
            f'split {self.split_dirs.get(split, split)!r}'
        )

    def _annotation_path(self) -> str:
        path = self.ann_file_name
        return path if osp.isabs(path) else osp.join(self.data_root, path)

    # ------------------------------------------------------------------ #
    # Listing
    # ------------------------------------------------------------------ #
    def _load_raw_split(self, split: Optional[str]) -> List[dict]:
        """The records of one split (``'train'``, ``'query'``, ``'gallery'`` or None)."""
        if self.ann_file_name is not None:
            records = self._load_csv(split)
        else:
            records = self._load_folders(split)
        if split is None and not records:
            where = self._annotation_path() if self.ann_file_name else self.data_root
            raise DataError(
                f'{self._name}: no sample in {where} for the modalities {self.modalities}'
            )
        if split == 'gallery' and self.split == 'test':
            self._gallery_ids = {r['gt_label'] for r in records}
        if split == 'query' and self.split == 'test':
            self._query_ids = {r['gt_label'] for r in records}
        return records

    def load_data_list(self) -> List[dict]:
        """Read the split (see :class:`BaseMultiModalReIDDataset`) and check its ids."""
        data_list = super().load_data_list()
        if self.split == 'test':
            self._check_query_ids()
        return data_list

    def _check_query_ids(self) -> None:
        """Every query id should have gallery samples; none having any is an error."""
        query, gallery = getattr(self, '_query_ids', set()), getattr(self, '_gallery_ids', set())
        lacking = sorted(query - gallery)
        if not lacking:
            return
        if len(lacking) == len(query):
            raise DataError(
                f"{self._name}: none of the {len(query)} query ids of split 'query' is in split "
                f"'gallery' (query ids e.g. {lacking[:5]}, gallery ids e.g. "
                f'{sorted(gallery)[:5]}); the evaluation needs each query identity in the gallery'
            )
        print_log(
            f'{self._name}: {len(lacking)} of {len(query)} query ids have no sample in split '
            f"'gallery' ({lacking[:10]}{' ...' if len(lacking) > 10 else ''}); those queries "
            'are skipped by the evaluation',
            logger='current',
            level=logging.WARNING,
        )

    def _parse_name(self, stem: str, name: str, path: str) -> Dict[str, int]:
        """Identity / camera / scene from a file name (or -1 without a pattern)."""
        if self._regex is None:
            return dict(gt_label=-1, camid=-1)
        match = self._regex.fullmatch(stem) or self._regex.fullmatch(name)
        if match is None:
            raise DataError(
                f'{self._name}: cannot parse image name {name!r} at {path}; expected it (without '
                f'its extension) to match dataset.name_pattern "{self.name_pattern}"'
            )
        fields = {}
        for group, key in (('pid', 'gt_label'), ('camid', 'camid'), ('sceneid', 'sceneid')):
            if group not in self._regex.groupindex:
                continue
            value = match.group(group)
            if value is None or not _INT.fullmatch(value):
                raise DataError(
                    f'{self._name}: image name {name!r} at {path}: group {group!r} of '
                    f'dataset.name_pattern "{self.name_pattern}" matched {value!r}, not an '
                    'integer (ASCII digits)'
                )
            fields[key] = int(value)
        fields.setdefault('camid', -1)
        return fields

    def _record(self, paths: List[Optional[str]], fields: Dict[str, int]) -> dict:
        record = dict(
            img_paths=paths,
            tile_indices=None,
            gt_label=int(fields['gt_label']),
            camid=int(fields.get('camid', -1)),
        )
        if self.has_scenes:
            record['sceneid'] = int(fields['sceneid'])
        return record

    def _load_folders(self, split: Optional[str]) -> List[dict]:
        """List ``<root>/<split>/<modality folder>/`` (or ``<root>/<modality folder>/``)."""
        root = self.data_root if split is None else self._split_dir(split)
        where = 'the gallery' if split is None else f'split {split!r}'
        listings: Dict[str, Dict[str, str]] = OrderedDict()
        for modality in self.modalities:
            folder = osp.join(root, self.modality_dirs[modality])
            if not osp.isdir(folder):
                present = (
                    sorted(e for e in os.listdir(root) if osp.isdir(osp.join(root, e)))
                    if osp.isdir(root)
                    else []
                )
                raise DataNotFoundError(
                    f'{self._name} {where}: folder of modality {modality!r} not found: {folder} '
                    f'(folders there: {present}); set dataset.modality_dirs (modality -> folder '
                    'name) or drop the modality from `modalities`'
                )
            stems: Dict[str, str] = {}
            for name in list_image_names(folder):
                stem = osp.splitext(name)[0]
                if stem in stems:
                    raise DataError(
                        f'{self._name} {where}: {osp.join(folder, stems[stem])} and '
                        f'{osp.join(folder, name)} share the name {stem!r}; the files of one '
                        'sample are paired by name without the extension'
                    )
                stems[stem] = name
            listings[modality] = stems
        all_stems = sorted(set().union(*(set(v) for v in listings.values())))
        records = []
        for stem in all_stems:
            paths: List[Optional[str]] = []
            for modality, stems in listings.items():
                name = stems.get(stem)
                folder = osp.join(root, self.modality_dirs[modality])
                paths.append(None if name is None else osp.join(folder, name))
            if not self.allow_missing and not all(paths):
                absent = [m for m, p in zip(self.modalities, paths) if p is None]
                other = next(p for p in paths if p)
                raise DataNotFoundError(
                    f'{self._name} {where}: no {absent[0]!r} image named {stem}.* in '
                    f'{osp.join(root, self.modality_dirs[absent[0]])} (paired by name with '
                    f'{other}); set dataset.allow_missing=True to accept samples lacking a '
                    'modality'
                )
            first = next(p for p in paths if p)
            fields = self._parse_name(stem, osp.basename(first), first)
            records.append(self._record(paths, fields))
        return records

    def _load_csv(self, split: Optional[str]) -> List[dict]:
        """The rows of one split of the annotation file (every row for ``split=None``)."""
        path = self._annotation_path()
        if not osp.isfile(path):
            raise DataNotFoundError(
                f'{self._name}: annotation file not found: {path} (dataset.ann_file '
                f'{self.ann_file_name!r}, relative to data_root)'
            )
        rows = self._csv_rows(path)
        if split is not None:
            value = self.split_dirs[split]
            rows = [(line, row) for line, row in rows if row['split'] == value]
        records = []
        for line, row in rows:
            where = f'{path} line {line}'
            paths: List[Optional[str]] = []
            for modality in self.modalities:
                cell = (row.get(modality) or '').strip()
                if not cell:
                    paths.append(None)
                    continue
                full = cell if osp.isabs(cell) else osp.join(self.data_root, cell)
                if not osp.isfile(full):
                    raise DataNotFoundError(
                        f'{self._name}: {where}: column {modality!r} points to {cell!r}, and '
                        f'there is no file {full} (paths are relative to data_root '
                        f'{self.data_root})'
                    )
                paths.append(full)
            if not any(paths):
                raise DataError(
                    f'{self._name}: {where}: no image in any modality column '
                    f'{list(self.modalities)}; every sample needs at least one'
                )
            if not self.allow_missing and not all(paths):
                absent = [m for m, p in zip(self.modalities, paths) if p is None]
                raise DataError(
                    f'{self._name}: {where}: empty cell for the modalities {absent}; set '
                    'dataset.allow_missing=True to accept samples lacking a modality'
                )
            fields = {}
            for column, key in (('pid', 'gt_label'), ('camid', 'camid'), ('sceneid', 'sceneid')):
                fields[key] = self._csv_int(row, column, where, split)
            records.append(self._record(paths, fields))
        return records

    def _csv_int(self, row: dict, column: str, where: str, split: Optional[str]) -> int:
        """An integer cell; -1 where the value may be unknown."""
        cell = (row.get(column) or '').strip()
        if cell:
            if not _INT.fullmatch(cell):
                raise DataError(
                    f'{self._name}: {where}: column {column!r} holds {cell!r}; expected an '
                    'integer (ASCII digits)'
                )
            return int(cell)
        needed = split is not None and (
            column == 'pid'
            or (column == 'camid' and self._removal_rule == 'camera')
            or (column == 'sceneid' and self._removal_rule == 'scene')
        )
        if needed:
            why = 'ids' if column == 'pid' else f'removal_rule={self._removal_rule!r}'
            raise DataError(
                f'{self._name}: {where}: column {column!r} is empty; split {split!r} needs '
                f'{why}' + (f'; {_NO_IDS_HINT}' if column == 'pid' else '')
            )
        return -1

    def _csv_rows(self, path: str) -> List[Tuple[int, dict]]:
        """``(line number, row)`` of the annotation file, header checked."""
        cached = getattr(self, '_rows_cache', None)
        if cached is not None and cached[0] == path:
            return cached[1]
        try:
            with open(path, newline='', encoding='utf-8-sig') as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                reader.fieldnames = header
                rows = [
                    (i + 2, {k: v for k, v in r.items() if k is not None})
                    for i, r in enumerate(reader)
                ]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(
                f'{self._name}: cannot read the annotation file {path}: {exc}'
            ) from None
        required = list(self.modalities)
        if self.split is not None:
            required = ['split', 'pid'] + required
            rule_column = {'camera': 'camid', 'scene': 'sceneid'}.get(self._removal_rule)
            if rule_column:
                required.append(rule_column)
        lacking = [c for c in required if c not in header]
        if lacking:
            raise DataError(
                f'{self._name}: the annotation file {path} lacks the columns {lacking} (it has '
                f'{header}); expected split, pid, camid, optionally sceneid, and one path column '
                f'per modality {list(self.modalities)}'
            )
        if self.split is not None:
            allowed = set(self.split_dirs.values())
            for line, row in rows:
                value = (row.get('split') or '').strip()
                row['split'] = value
                if value not in allowed:
                    raise DataError(
                        f'{self._name}: {path} line {line}: split {value!r}; expected one of '
                        f'{sorted(allowed)}'
                    )
        self._rows_cache = (path, rows)
        return rows
