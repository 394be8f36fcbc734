"""Common machinery of the multi-modal ReID datasets.

Every benchmark reads its official folder layout into ``data_info`` dicts
that follow ``docs/contracts.md``:

- ``img_paths``: one path per modality, in ``metainfo['modalities']`` order;
- ``tile_indices``/``num_tiles``: for strips holding all modalities side by
  side (``tile_indices`` is ``None`` and ``num_tiles`` absent otherwise);
- ``modalities``, ``gt_label``, ``camid`` (0-based), ``sceneid`` (only where
  the benchmark has scenes), ``is_query``.

A subclass states its folder names and implements :meth:`_load_raw_split`,
which lists one official split folder (``'train'``, ``'query'`` or
``'gallery'``) into records with raw ids; the base class derives the
``'train'``, ``'query'``, ``'gallery'``, ``'test'`` and held-out ``'val'``
splits, relabels training ids, fills the metainfo and logs a summary table.
"""

import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from mmdmpt.structures import MODALITIES, check_modalities, removal_rule_name
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError
from mmdmpt.utils.seeding import seeded_rngs

#: File extensions read as images (compared case-insensitively).
IMG_EXTENSIONS: Tuple[str, ...] = ('.jpg', '.jpeg', '.png', '.bmp')

#: Split names a dataset accepts.
SPLITS: Tuple[str, ...] = ('train', 'query', 'gallery', 'test', 'val')


def is_image_file(name: str) -> bool:
    """Whether a directory entry is read as an image.

    Hidden names (starting with ``'.'``) and names whose extension is not one
    of :data:`IMG_EXTENSIONS` (case-insensitive) are not.

    Args:
        name (str): A file name (no directory part).

    Returns:
        bool: True for a visible image file name.
    """
    return not name.startswith('.') and osp.splitext(name)[1].lower() in IMG_EXTENSIONS


def list_image_names(folder: str) -> List[str]:
    """Sorted names of the image files directly inside ``folder``.

    Args:
        folder (str): A directory.

    Returns:
        list[str]: File names (not paths), sorted.

    Raises:
        DataNotFoundError: If an entry named like an image is not a readable
            file (a broken or looping symbolic link): silently skipping it
            would drop or unpair a sample.
    """
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_image_file(entry.name):
                continue
            try:
                is_file = entry.is_file()
            except OSError as exc:  # e.g. a link to itself
                raise DataNotFoundError(
                    f'{osp.join(folder, entry.name)}: not a readable image file ({exc})'
                ) from None
            if is_file:
                names.append(entry.name)
            elif entry.is_symlink() and not osp.exists(entry.path):
                raise DataNotFoundError(
                    f'{osp.join(folder, entry.name)}: a broken symbolic link where an image '
                    'file was expected; fix or remove the link'
                )
    return sorted(names)


def list_subfolders(folder: str) -> List[str]:
    """Sorted names of the visible sub-directories of ``folder``.

    Args:
        folder (str): A directory.

    Returns:
        list[str]: Directory names, sorted; hidden ones are left out.
    """
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if not e.name.startswith('.') and e.is_dir()]
    return sorted(names)


def pair_by_name(folders: Mapping[str, str], context: str) -> List[str]:
    """Names present in every modality folder, failing on any unpaired file.

    Modalities are paired by identical file name, never by listing order.

    Args:
        folders (Mapping[str, str]): Modality name -> folder, in modality
            order. Every folder must exist.
        context (str): Dataset and split, for messages.

    Returns:
        list[str]: The shared image names, sorted.

    Raises:
        DataNotFoundError: If a modality folder is missing, or an image of
            one modality has no file of the same name in another modality.
    """
    listings = OrderedDict()
    for modality, folder in folders.items():
        if not osp.isdir(folder):
            raise DataNotFoundError(
                f'{context}: folder of modality {modality!r} not found: {folder}; '
                'drop the modality from `modalities` or restore the folder'
            )
        listings[modality] = list_image_names(folder)
    names = sorted(set().union(*(set(v) for v in listings.values())))
    sets = {m: set(v) for m, v in listings.items()}
    for name in names:
        for modality, present in sets.items():
            if name not in present:
                other = next(m for m in sets if name in sets[m])
                raise DataNotFoundError(
                    f'{context}: missing {modality!r} image '
                    f'{osp.join(folders[modality], name)} (paired by file name with '
                    f'{osp.join(folders[other], name)})'
                )
    return names


class BaseMultiModalReIDDataset(BaseDataset):
    """Base class of the multi-modal object ReID benchmarks.

    Splits:

    - ``'train'``: the training folder, ids relabelled ``0..N-1`` in the order
      of the sorted raw ids (held-out validation ids removed when
      ``val_fraction > 0``);
    - ``'query'`` / ``'gallery'``: the official query / gallery folders, raw
      ids, ``is_query`` True / False;
    - ``'test'``: the query samples followed by the gallery samples;
    - ``'val'``: only when ``val_fraction > 0``: the held-out training ids,
      raw ids, one query per (id, camera) chosen with ``val_seed`` followed by
      the remaining samples as gallery.

    Metainfo: ``dataset_name``, ``modalities`` (the order of ``img_paths``
    and of the packed images), ``split``, ``has_scenes`` (True when samples
    carry ``sceneid``: MSVR310), ``removal_rule`` (which gallery samples the
    evaluation hides from a query: ``'camera'``, ``'scene'`` for MSVR310, or
    ``'none'``; :class:`~mmdmpt.evaluation.ReIDMetric` reads it), ``classes``
    (raw ids as strings; for ``'train'`` ``classes[label]`` is the raw id of
    a relabelled label) and ``num_ids`` (``len(classes)``, the classifier
    size for ``'train'``).

    A summary table (ids, samples, cameras, with scenes the scenes, and the
    samples lacking a modality, per part of the split) and the removal rule
    are logged when the split is read.

    An index that carries a seed (a
    :class:`~mmdmpt.datasets.samplers.SeededIndex`, as
    :class:`~mmdmpt.datasets.IdentitySampler` yields) has its sample loaded
    and augmented with ``random``, ``numpy.random`` and torch's CPU generator
    seeded from it, and restored afterwards; plain ints use the generators as
    they are.

    Args:
        data_root (str): Root of the benchmark as downloaded (e.g.
            ``'data/RGBNT201/'``).
        split (str): One of ``'train'``, ``'query'``, ``'gallery'``,
            ``'test'`` and ``'val'``. Defaults to ``'train'``.
        modalities (Sequence[str]): Non-empty subset of
            ``('rgb', 'nir', 'tir')``; the order given is kept. Defaults to
            ``('rgb', 'nir', 'tir')``.
        pipeline (Sequence[dict | Callable]): Transforms. Defaults to ``()``.
        val_fraction (float): Fraction of the training ids held out as the
            ``'val'`` split, in ``[0, 1)``. Defaults to 0.0 (no held-out ids).
        val_seed (int): Seed of the held-out id choice and of the ``'val'``
            query choice. Defaults to 0.
        test_mode (bool, optional): Passed to ``BaseDataset``; ``None`` means
            True for every split but ``'train'``. Defaults to None.
        metainfo (Mapping, optional): Extra metainfo. Defaults to None.
        lazy_init (bool): Defer reading the folders. Defaults to False.
        serialize_data (bool): Serialise the data list. Defaults to True.
        max_refetch (int): See ``BaseDataset``. Defaults to 1000.
        indices (int | Sequence[int], optional): Keep only these samples
            (the first ``indices`` when an int), as ``BaseDataset`` does; for
            quick checks. Defaults to None (all).
    """

    #: Benchmark name (metainfo ``dataset_name``).
    DATASET_NAME: str = ''
    #: Official split folder of ``'train'``, ``'query'``, ``'gallery'``,
    #: relative to ``data_root``.
    SPLIT_FOLDERS: Dict[str, str] = {}
    #: Folder (or tile index) of each modality.
    MODALITY_FOLDERS: Dict[str, str] = {}
    #: File name pattern, for messages.
    NAME_PATTERN: str = ''
    #: Whether samples carry scene ids (``sceneid``).
    HAS_SCENES: bool = False
    #: Whether ``split=None`` (one folder without split level, e.g. a search
    #: gallery) is accepted; :meth:`_load_raw_split` then gets None.
    ALLOW_NO_SPLIT: bool = False

    METAINFO: dict = dict(modalities=MODALITIES)

    def __init__(
        self,
        data_root: str,
        split: str = 'train',
        modalities: Sequence[str] = MODALITIES,
        pipeline: Sequence[Union[dict, Callable]] = (),
        val_fraction: float = 0.0,
        val_seed: int = 0,
        test_mode: Optional[bool] = None,
        metainfo: Optional[Mapping] = None,
        lazy_init: bool = False,
        serialize_data: bool = True,
        max_refetch: int = 1000,
        indices: Optional[Union[int, Sequence[int]]] = None,
    ) -> None:
        name = self.DATASET_NAME or type(self).__name__
        if split not in SPLITS and not (split is None and self.ALLOW_NO_SPLIT):
            raise ConfigError(
                f'{name}: unknown split {split!r} (dataset.split); expected one of {SPLITS}'
            )
        if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f'{name}: val_fraction must be in [0, 1), got {val_fraction!r}')
        if split == 'val' and val_fraction <= 0:
            raise ConfigError(
                f"{name}: split 'val' needs val_fraction > 0 (the fraction of "
                f'training ids to hold out), got val_fraction={val_fraction!r}'
            )
        if not data_root:
            raise DataNotFoundError(
                f'{name}: data_root is empty; expected the benchmark root (e.g. '
                'data/RGBNT201), set dataset.data_root or pass --data-root'
            )
        self.split = split
        self.modalities = check_modalities(
            modalities, 'dataset.modalities', allowed=self.known_modalities()
        )
        self.val_fraction = float(val_fraction)
        self.val_seed = int(val_seed)
        if test_mode is None:
            test_mode = split != 'train'
        super().__init__(
            ann_file='',
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=dict(img_path=''),
            pipeline=list(pipeline),
            test_mode=test_mode,
            lazy_init=lazy_init,
            serialize_data=serialize_data,
            max_refetch=max_refetch,
            indices=indices,
        )
        # Set here (not through ``metainfo=``, whose string values BaseDataset
        # tries to read as file names); also set by ``load_data_list``.
        self._metainfo.update(self._static_metainfo())

    @classmethod
    def known_modalities(cls) -> Optional[Tuple[str, ...]]:
        """The modality names this reader knows (its folders or tiles); None for any."""
        names = tuple(cls.MODALITY_FOLDERS) or tuple(getattr(cls, 'TILE_INDICES', {}))
        return names or None

    @property
    def has_scenes(self) -> bool:
        """bool: Whether samples carry scene ids (``sceneid``)."""
        return self.HAS_SCENES

    @property
    def removal_rule(self) -> str:
        """str: The evaluation's removal rule (``'scene'`` with scenes, else ``'camera'``)."""
        return 'scene' if self.has_scenes else 'camera'

    def _static_metainfo(self) -> dict:
        return dict(
            dataset_name=self.dataset_name,
            modalities=self.modalities,
            split=self.split,
            has_scenes=self.has_scenes,
            removal_rule=self.removal_rule,
        )

    # ------------------------------------------------------------------ #
    # To implement in subclasses
    # ------------------------------------------------------------------ #
    def _load_raw_split(self, split: str) -> List[dict]:
        """List one official split folder.

        Args:
            split (str): ``'train'``, ``'query'`` or ``'gallery'``.

        Returns:
            list[dict]: Records with ``img_paths`` (modality order),
            ``tile_indices`` (or None), optionally ``num_tiles``, ``gt_label``
            (raw id), ``camid`` (0-based), ``sceneid`` (scenes only) and any
            extra benchmark keys, in a deterministic order.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ #
    # Helpers for subclasses
    # ------------------------------------------------------------------ #
    @property
    def dataset_name(self) -> str:
        """str: The benchmark name."""
        return self.DATASET_NAME or type(self).__name__

    def _split_dir(self, split: str) -> str:
        """Existing folder of an official split, or DataNotFoundError."""
        folder = osp.join(self.data_root, self.SPLIT_FOLDERS[split])
        if not osp.isdir(folder):
            raise DataNotFoundError(
                f'{self.dataset_name}: folder of split {split!r} not found: {folder} '
                f'(expected {self.SPLIT_FOLDERS[split]!r} under data_root)'
            )
        return folder

    def _load_id_folders(self, split: str, parse: Callable[[str, str, int], dict]) -> List[dict]:
        """List a ``<split>/<id>/<modality folder>/<name>`` layout.

        Modalities are paired by file name inside each id folder.

        Args:
            split (str): ``'train'``, ``'query'`` or ``'gallery'``.
            parse (Callable): ``parse(name, path, pid)`` returns the record
                fields read from an image name (``camid``, ...) or raises.

        Returns:
            list[dict]: Records sorted by id then name.
        """
        root = self._split_dir(split)
        records = []
        for folder in list_subfolders(root):
            if not re.fullmatch(r'[0-9]+', folder):
                raise DataError(
                    f'{self.dataset_name}: cannot parse id folder {folder!r} in {root}; '
                    'expected a folder named by the numeric id (e.g. 0019)'
                )
            pid = int(folder)
            id_dir = osp.join(root, folder)
            folders = {m: osp.join(id_dir, self.MODALITY_FOLDERS[m]) for m in self.modalities}
            names = pair_by_name(folders, f'{self.dataset_name} split {split!r} id {folder}')
            for name in names:
                path = osp.join(folders[self.modalities[0]], name)
                record = dict(
                    img_paths=[osp.join(folders[m], name) for m in self.modalities],
                    tile_indices=None,
                    gt_label=pid,
                )
                record.update(parse(name, path, pid))
                records.append(record)
        return records

    # ------------------------------------------------------------------ #
    # BaseDataset interface
    # ------------------------------------------------------------------ #
    def load_data_list(self) -> List[dict]:
        """Read the requested split into ``data_info`` dicts.

        Returns:
            list[dict]: The data list (see ``docs/contracts.md``).
        """
        if not osp.isdir(self.data_root):
            raise DataNotFoundError(
                f'{self.dataset_name}: data_root not found: {self.data_root}; put the dataset '
                'there in its official layout or set dataset.data_root'
            )
        split = self.split
        sections: List[Tuple[str, List[dict]]] = []
        if split is None:
            records = self._load_raw_split(None)
            self._check_not_empty(records, 'gallery')
            for r in records:
                r['is_query'] = False
            sections.append(('gallery', records))
            ids = sorted({r['gt_label'] for r in records if r['gt_label'] >= 0})
            classes = tuple(str(pid) for pid in ids)
        elif split in ('train', 'val'):
            records = self._load_raw_split('train')
            self._check_not_empty(records, 'train')
            train_ids = sorted({r['gt_label'] for r in records})
            held_out = self._held_out_ids(train_ids)
            if split == 'train':
                kept = [r for r in records if r['gt_label'] not in held_out]
                label_of = {pid: i for i, pid in enumerate(sorted(set(train_ids) - held_out))}
                for r in kept:
                    r['gt_label'] = label_of[r['gt_label']]
                    r['is_query'] = False
                sections.append(('train', kept))
                classes = tuple(str(pid) for pid in sorted(label_of))
            else:
                val = [r for r in records if r['gt_label'] in held_out]
                query, gallery = self._split_val(val)
                sections += [('query', query), ('gallery', gallery)]
                classes = tuple(str(pid) for pid in sorted(held_out))
        else:
            parts = ('query', 'gallery') if split == 'test' else (split,)
            for part in parts:
                records = self._load_raw_split(part)
                self._check_not_empty(records, part)
                for r in records:
                    r['is_query'] = part == 'query'
                sections.append((part, records))
            ids = sorted({r['gt_label'] for _, recs in sections for r in recs})
            classes = tuple(str(pid) for pid in ids)

        data_list = []
        for _, records in sections:
            for r in records:
                r['modalities'] = self.modalities
                r['is_query'] = bool(r['is_query'])
                data_list.append(r)
        self._check_not_empty(data_list, split)
        self._metainfo.update(self._static_metainfo())
        self._metainfo.update(classes=classes, num_ids=len(classes))
        self._log_summary(sections)
        return data_list

    def __getitem__(self, idx: int) -> dict:
        """Load and transform sample ``idx``, seeded by it when it carries a seed.

        Args:
            idx (int): The index; a
                :class:`~mmdmpt.datasets.samplers.SeededIndex` runs the
                pipeline (and any refetch) in
                :func:`~mmdmpt.datasets.samplers.seeded_rngs` ``(idx.seed)``.

        Returns:
            dict: The output of the pipeline.
        """
        seed = getattr(idx, 'seed', None)
        if seed is None:
            return super().__getitem__(idx)
        with seeded_rngs(seed):
            return super().__getitem__(int(idx))

    # ------------------------------------------------------------------ #
    # Internals
    # ------------------------------------------------------------------ #
    def _check_not_empty(self, records: List[dict], split: str) -> None:
        if not records:
            where = self.SPLIT_FOLDERS.get(split, split)
            raise DataError(
                f'{self.dataset_name}: split {split!r} is empty: no image under '
                f'{osp.join(self.data_root, where)} for modalities {self.modalities}'
            )

    def _held_out_ids(self, train_ids: List[int]) -> set:
        """Raw training ids held out for ``'val'`` (deterministic)."""
        if self.val_fraction <= 0:
            return set()
        num = len(train_ids)
        k = max(1, int(round(self.val_fraction * num)))
        if k >= num:
            raise ConfigError(
                f'{self.dataset_name}: val_fraction={self.val_fraction} holds out {k} of '
                f'{num} training ids and leaves none to train on; use a smaller value'
            )
        rng = np.random.default_rng([self.val_seed, 0x5EED])
        chosen = rng.choice(num, size=k, replace=False)
        return {train_ids[i] for i in chosen}

    def _split_val(self, records: List[dict]) -> Tuple[List[dict], List[dict]]:
        """One query per (id, camera), the rest gallery (deterministic)."""
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault((r['gt_label'], r['camid']), []).append(i)
        rng = np.random.default_rng([self.val_seed, 0x0A1])
        query_idx = set()
        for key in sorted(groups):
            members = groups[key]
            query_idx.add(members[int(rng.integers(len(members)))])
        query, gallery = [], []
        for i, r in enumerate(records):
            r['is_query'] = i in query_idx
            (query if r['is_query'] else gallery).append(r)
        return query, gallery

    def _log_summary(self, sections: List[Tuple[str, List[dict]]]) -> None:
        """Log ids / samples / cameras (/ scenes) per part of the split."""
        header = ['subset', '# ids', '# samples', '# cameras']
        if self.has_scenes:
            header.append('# scenes')
        header.append('# lacking a modality')
        rows = []
        for part, records in sections:
            row = [
                part,
                len({r['gt_label'] for r in records if r['gt_label'] >= 0}),
                len(records),
                len({r['camid'] for r in records if r['camid'] >= 0}),
            ]
            if self.has_scenes:
                row.append(len({r['sceneid'] for r in records}))
            row.append(sum(not all(r['img_paths']) for r in records))
            rows.append([str(v) for v in row])
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        line = '-' * (sum(widths) + 3 * (len(widths) - 1) + 4)

        def fmt(cells):
            return '  ' + ' | '.join(c.rjust(w) for c, w in zip(cells, widths))

        split = 'without split (one folder)' if self.split is None else f'split {self.split!r}'
        lines = [
            f'{self.dataset_name} {split} '
            f'(modalities {", ".join(self.modalities)}, root {self.data_root}):',
            line,
            fmt(header),
            line,
            *(fmt(r) for r in rows),
            line,
            f'  removal rule of the evaluation: {removal_rule_name(self.removal_rule)}',
        ]
        print_log('\n'.join(lines), logger='current')
