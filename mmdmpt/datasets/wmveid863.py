r"""WMVeID863 (MSVWild863): vehicles in the wild, in any of its public layouts.

The public loaders of this benchmark read three different trees, and a copy
downloaded by a user may be in any of them (:data:`WMVEID863_LAYOUTS`):

``'id_folders'``
    ``{train,query,test}/<vid>/{vis,ni,th}/<name>.jpg``; the id is the folder
    name, the camera the first ``v<digits>`` of the name, the night flag the
    first ``n<digit>`` (e.g. ``0001_v2_n1_004.jpg``). Read this way by most
    public loaders (e.g. ``M-c0/MCNet`` and ``wanxixi11/UGG-ReID``
    ``data/datasets/WMVEID863.py``, ``Loverrikka/MAN``
    ``data/datasets/MSVwild863.py``).
``'flat'``
    ``{train,query,test}/{vis,ni,th}/<id>_cam<c>_<rest>.jpg``; no id folders,
    the id and the 1-based camera are the first two ``_`` fields of the name.
``'id_folders_gallery'``
    as ``'id_folders'`` with the gallery folder named ``gallery/`` instead of
    ``test/`` (read so by a public loader class named ``Flare``, whose
    repository the searched index did not name).

What was confirmed about the flat layout, and from where: the
``MSVWild863._process_dir`` of ``young6man/STMI`` (and an unused copy in
``skye-1201/REMIND``), ``data/datasets/MSVWild863.py``, globs
``<split>/vis/*.jpg``, takes the NIR and TIR files of the same name from
``<split>/ni`` and ``<split>/th``, reads the id as the integer of the first
``_`` field (at most 6 characters) and the camera as the character after
``cam`` in the second field, minus one. So a flat name is
``<id>_cam<c>_...``, ``c`` counted from 1. Those loaders read no night flag.
Not confirmed: the DeMo and IDEA sources themselves (not in the searched
index; IDEA's README lists no WMVeID863), what follows the camera field in
a real flat copy, and whether real flat names carry a night flag. This class
therefore reads the night flag of a flat name only when one of its later
``_`` fields is exactly ``n<digit>`` (as the synthetic generator writes:
``0005_cam2_n1_004.jpg``), and leaves ``night`` out otherwise.
"""

import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

from mmengine.logging import print_log

from mmdmpt.registry import DATASETS
from mmdmpt.utils.errors import ConfigError, DataError, DataNotFoundError

from .base import BaseMultiModalReIDDataset, list_subfolders, pair_by_name
from .names import bad_name_error, parse_id_camera

DATASET_NAME = 'WMVeID863'
NAME_PATTERN = (
    'a name holding v<camera> and n<night 0|1>, e.g. {vid:04d}_v{cam}_n{night}_{idx:03d}.jpg'
)
FLAT_NAME_PATTERN = (
    '{id}_cam{camera from 1}[_...].jpg, e.g. 0005_cam2_n1_004.jpg (a later field n<d> is read '
    'as the night flag when present)'
)

#: The public layouts of the release, as the synthetic generator writes them:
#: name -> (structure, gallery folder).
WMVEID863_LAYOUTS: Dict[str, Tuple[str, str]] = {
    'id_folders': ('id_folders', 'test'),
    'flat': ('flat', 'test'),
    'id_folders_gallery': ('id_folders', 'gallery'),
}
#: Values of the ``layout=`` option of :class:`WMVeID863`.
LAYOUT_OPTIONS: Tuple[str, ...] = ('auto', 'id_folders', 'flat')
#: Values of the ``gallery_folder=`` option of :class:`WMVeID863`.
GALLERY_FOLDER_OPTIONS: Tuple[str, ...] = ('auto', 'test', 'gallery')
#: Folder of each modality (both structures).
MODALITY_FOLDERS: Dict[str, str] = {'rgb': 'vis', 'nir': 'ni', 'tir': 'th'}

EXPECTED_LAYOUTS = (
    'expected train/, query/ and test/ (or gallery/, not both) under data_root, each holding '
    "either <vid>/{vis,ni,th}/<name>.jpg (layout 'id_folders') or "
    "{vis,ni,th}/<id>_cam<c>_<...>.jpg (layout 'flat')"
)

_CAM_RE = re.compile(r'v([0-9]+)')
_NIGHT_RE = re.compile(r'n([0-9])')
_FLAT_RE = re.compile(r'([0-9]+)_cam([0-9]+)(?:_.*)?')
_ID_FOLDER_RE = re.compile(r'[0-9]+')


def parse_wmveid863_name(name: str, path: Optional[str] = None) -> Dict[str, int]:
    """Read the camera and the night flag from a WMVeID863 image name (id folders).

    As the public loaders do, the camera is the first ``v<digits>`` and the
    night flag the first ``n<digit>`` found anywhere in the name (the id is
    the folder's); e.g. ``0001_v2_n1_004.jpg``. Digits are ASCII only.

    Args:
        name (str): The file name (no directory part).
        path (str, optional): The file, for the message. Defaults to None
            (``name``).

    Returns:
        dict: ``camid`` (as written) and ``night``.

    Raises:
        DataError: ``'WMVeID863: cannot parse image name ...'`` naming the
            file, the missing field and the expected pattern.
    """
    path = name if path is None else path
    stem = osp.splitext(name)[0]
    cam = _CAM_RE.search(stem)
    night = _NIGHT_RE.search(stem)
    if cam is None or night is None:
        missing = 'camera field v<d>' if cam is None else 'night flag n<d>'
        raise bad_name_error(DATASET_NAME, NAME_PATTERN, path, f'no {missing}')
    return dict(camid=int(cam.group(1)), night=int(night.group(1)))


def parse_wmveid863_flat_name(name: str, path: Optional[str] = None) -> Dict[str, int]:
    """Read the id, the camera and the night flag of a flat-layout image name.

    The name is ``<id>_cam<c>`` optionally followed by ``_<more fields>``:
    the id is the first field (ASCII digits), the camera the digits after
    ``cam`` in the second, counted from 1 on disk and stored 0-based (as the
    public flat loaders do). The first later field that is exactly
    ``n<digit>`` is the night flag; without one the result has no ``night``.

    Args:
        name (str): The file name (no directory part).
        path (str, optional): The file, for the message. Defaults to None
            (``name``).

    Returns:
        dict: ``gt_label`` (the raw id), ``camid`` (0-based) and, when the
        name has it, ``night``.

    Raises:
        DataError: ``'WMVeID863: cannot parse image name ...'`` when the name
            does not match or its camera is 0.
    """
    path = name if path is None else path
    fields = parse_id_camera(name, _FLAT_RE, DATASET_NAME, FLAT_NAME_PATTERN, path)
    for field in osp.splitext(name)[0].split('_')[2:]:
        night = _NIGHT_RE.fullmatch(field)
        if night is not None:
            fields['night'] = int(night.group(1))
            break
    return fields


def _check_options(layout: str, gallery_folder: str) -> None:
    """Raise ConfigError for an unknown ``layout`` or ``gallery_folder`` value."""
    if layout not in LAYOUT_OPTIONS:
        raise ConfigError(
            f'{DATASET_NAME}: layout={layout!r} is not one of {LAYOUT_OPTIONS} '
            "('auto' detects the layout from the tree)"
        )
    if gallery_folder not in GALLERY_FOLDER_OPTIONS:
        raise ConfigError(
            f'{DATASET_NAME}: gallery_folder={gallery_folder!r} is not one of '
            f"{GALLERY_FOLDER_OPTIONS} ('auto' uses whichever of test/ and gallery/ exists)"
        )


def _classify_split_folder(folder: str) -> Tuple[set, List[str]]:
    """Which structures a split folder's sub-folders look like.

    Args:
        folder (str): An existing split folder.

    Returns:
        tuple: The set of structures seen (``'flat'`` when a ``vis``, ``ni``
        or ``th`` folder is present, ``'id_folders'`` when a folder named by
        ASCII digits is) and the names of the other sub-folders.
    """
    kinds = set()
    others = []
    modality_folders = set(MODALITY_FOLDERS.values())
    for name in list_subfolders(folder):
        if name in modality_folders:
            kinds.add('flat')
        elif _ID_FOLDER_RE.fullmatch(name):
            kinds.add('id_folders')
        else:
            others.append(name)
    return kinds, others


def resolve_wmveid863_layout(
    data_root: str, layout: str = 'auto', gallery_folder: str = 'auto'
) -> Tuple[str, str]:
    """The structure and gallery folder of a WMVeID863 tree.

    Detection rule (for the ``'auto'`` values):

    1. Gallery folder: ``test/`` when only it exists under ``data_root``,
       ``gallery/`` when only it exists, ``test/`` when neither does (the
       missing folder is reported when a split needs it); both is an
       ambiguous tree and an error.
    2. Structure: each existing split folder (``train/``, ``query/``, the
       gallery folder) is read for its sub-folders: ``vis``/``ni``/``th``
       mean ``'flat'``, folders named by digits mean ``'id_folders'``. Every
       split folder that shows one must show the same one; a folder showing
       both, split folders that disagree, or a split folder with only other
       sub-folders are errors. Split folders without sub-folders say nothing;
       when none says anything, ``'id_folders'`` is assumed.

    A forced value is used as given, but a split folder that clearly holds
    the other structure (only modality folders or only id folders, not the
    forced kind) is an error, so that a wrong option is not read as an empty
    or mis-parsed tree.

    Args:
        data_root (str): The ``WMVeID863/`` folder (must exist).
        layout (str): ``'auto'``, ``'id_folders'`` or ``'flat'``. Defaults to
            ``'auto'``.
        gallery_folder (str): ``'auto'``, ``'test'`` or ``'gallery'``.
            Defaults to ``'auto'``.

    Returns:
        tuple[str, str]: The structure (``'id_folders'`` or ``'flat'``) and
        the gallery folder name (``'test'`` or ``'gallery'``).

    Raises:
        ConfigError: If ``layout`` or ``gallery_folder`` is not a known value.
        DataError: If the tree is ambiguous, mixed, unrecognised, or holds
            another structure than the forced one; the message names the
            folders and the expected layouts.
    """
    _check_options(layout, gallery_folder)
    if gallery_folder == 'auto':
        present = [n for n in ('test', 'gallery') if osp.isdir(osp.join(data_root, n))]
        if len(present) == 2:
            raise DataError(
                f'{DATASET_NAME}: ambiguous tree under {data_root}: both '
                f'{osp.join(data_root, "test")} and {osp.join(data_root, "gallery")} exist, and '
                'either can be the gallery; remove one, or choose it with '
                "gallery_folder='test' or gallery_folder='gallery'"
            )
        gallery_folder = present[0] if present else 'test'

    seen: Dict[str, str] = {}  # split folder -> structure
    for split_name in ('train', 'query', gallery_folder):
        folder = osp.join(data_root, split_name)
        if not osp.isdir(folder):
            continue
        kinds, others = _classify_split_folder(folder)
        if layout != 'auto':
            other = 'flat' if layout == 'id_folders' else 'id_folders'
            if kinds == {other}:
                raise DataError(
                    f'{DATASET_NAME}: layout={layout!r} was given but {folder} holds the '
                    f'{other!r} layout ({_describe(other)}); use layout={other!r} or '
                    f"layout='auto' ({EXPECTED_LAYOUTS})"
                )
            continue
        if len(kinds) == 2:
            raise DataError(
                f'{DATASET_NAME}: cannot tell the layout of {folder}: it holds both modality '
                'folders (vis/ni/th, the flat layout) and numeric id folders (the id_folders '
                "layout); remove the stray folders, or pass layout='flat' to read the modality "
                f'folders and ignore the id folders ({EXPECTED_LAYOUTS})'
            )
        if kinds:
            seen[folder] = kinds.pop()
        elif others:
            raise DataError(
                f'{DATASET_NAME}: cannot tell the layout of {folder}: its folders '
                f'{others[:5]} are neither modality folders (vis/ni/th) nor numeric id '
                f'folders; {EXPECTED_LAYOUTS}'
            )
    if layout != 'auto':
        return layout, gallery_folder
    structures = sorted(set(seen.values()))
    if len(structures) > 1:
        detail = '; '.join(f'{folder} looks {kind!r}' for folder, kind in seen.items())
        raise DataError(
            f'{DATASET_NAME}: mixed tree under {data_root}: {detail}. All split folders must '
            f'share one layout; {EXPECTED_LAYOUTS}'
        )
    return (structures[0] if structures else 'id_folders'), gallery_folder


def _describe(structure: str) -> str:
    if structure == 'flat':
        return 'vis/ni/th folders directly in the split folder'
    return 'numeric id folders, each holding vis/ni/th'


@DATASETS.register_module()
class WMVeID863(BaseMultiModalReIDDataset):
    """WMVeID863 (also MSVWild863) multi-spectral vehicle ReID benchmark.

    Layouts (``data_root`` points at ``WMVeID863/``; ``test`` or ``gallery``
    is the gallery folder)::

        {train,query,test}/<vid>/{vis,ni,th}/<name>.jpg       # 'id_folders'
        {train,query,test}/{vis,ni,th}/<id>_cam<c>_<...>.jpg  # 'flat'
        {train,query,gallery}/<vid>/{vis,ni,th}/<name>.jpg    # gallery/ variant

    The layout is detected from the tree (``layout='auto'``,
    ``gallery_folder='auto'``; see :func:`resolve_wmveid863_layout` for the
    rule) or forced with the two options. A tree holding both ``test/`` and
    ``gallery/`` is ambiguous and refused unless ``gallery_folder`` is given.

    Names. With id folders the release documents no full name format; the
    public loaders read the camera from the first ``v<digits>`` and the night
    flag from the first ``n<digit>`` found anywhere in the name, and so does
    this class (the camera is stored as written: this family of sets numbers
    views from 0), e.g. ``0001_v2_n1_004.jpg``; see
    :func:`parse_wmveid863_name`. The id is the folder name. In the flat
    layout the name is ``<id>_cam<c>_...`` with ``c`` counted from 1 (stored
    ``c - 1``) and an optional ``n<d>`` field as the night flag; see
    :func:`parse_wmveid863_flat_name` and the module docstring for what was
    confirmed about it.

    Modalities are paired by FILE NAME in both structures (the public loaders
    of the id-folder layout pair by listing order, which is not guaranteed);
    a missing modality file is an error. Samples carry ``night`` (0 or 1) in
    their data info when the name has it (always with id folders). Same-id,
    same-camera evaluation rule.

    Args:
        data_root (str): The ``WMVeID863/`` folder.
        layout (str): ``'auto'`` (detect), ``'id_folders'`` or ``'flat'``.
            Defaults to ``'auto'``.
        gallery_folder (str): ``'auto'`` (whichever of ``test/`` and
            ``gallery/`` exists), ``'test'`` or ``'gallery'``. Defaults to
            ``'auto'``.
        **kwargs: See :class:`BaseMultiModalReIDDataset`.

    Attributes:
        resolved_layout (str | None): ``'id_folders'`` or ``'flat'``, once
            the tree has been read.
        resolved_gallery_folder (str | None): ``'test'`` or ``'gallery'``,
            once the tree has been read.
    """

    DATASET_NAME = DATASET_NAME
    SPLIT_FOLDERS = {'train': 'train', 'query': 'query', 'gallery': 'test'}
    MODALITY_FOLDERS = MODALITY_FOLDERS
    NAME_PATTERN = NAME_PATTERN

    def __init__(
        self, data_root: str, layout: str = 'auto', gallery_folder: str = 'auto', **kwargs
    ) -> None:
        _check_options(layout, gallery_folder)
        self.layout = layout
        self.gallery_folder = gallery_folder
        self.resolved_layout: Optional[str] = None
        self.resolved_gallery_folder: Optional[str] = None
        super().__init__(data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Resolve the layout, then read the split (see the base class).

        Returns:
            list[dict]: The data list.
        """
        if not osp.isdir(self.data_root):
            raise DataNotFoundError(
                f'{self.dataset_name}: data_root not found: {self.data_root} ({EXPECTED_LAYOUTS})'
            )
        structure, gallery = resolve_wmveid863_layout(
            self.data_root, self.layout, self.gallery_folder
        )
        self.resolved_layout, self.resolved_gallery_folder = structure, gallery
        # per instance: the class attribute keeps the default names
        self.SPLIT_FOLDERS = dict(type(self).SPLIT_FOLDERS, gallery=gallery)
        how = 'detected' if self.layout == 'auto' else 'given'
        print_log(
            f'{self.dataset_name}: reading layout {structure!r} ({how}) with gallery folder '
            f'{gallery}/ under {self.data_root}',
            logger='current',
        )
        return super().load_data_list()

    def _split_dir(self, split: str) -> str:
        """Existing folder of an official split, or DataNotFoundError."""
        folder = osp.join(self.data_root, self.SPLIT_FOLDERS[split])
        if not osp.isdir(folder):
            raise DataNotFoundError(
                f'{self.dataset_name}: folder of split {split!r} not found: {folder} '
                f'({EXPECTED_LAYOUTS})'
            )
        return folder

    def _parse(self, name: str, path: str, pid: int) -> dict:
        return parse_wmveid863_name(name, path)

    def _load_raw_split(self, split: str) -> list:
        """List one split folder in the resolved structure (see the base class)."""
        if self.resolved_layout == 'flat':
            return self._load_flat(split)
        return self._load_id_folders(split, self._parse)

    def _load_flat(self, split: str) -> List[dict]:
        """List a ``<split>/{vis,ni,th}/<id>_cam<c>_...`` folder, paired by name.

        Args:
            split (str): ``'train'``, ``'query'`` or ``'gallery'``.

        Returns:
            list[dict]: Records sorted by id then name.
        """
        root = self._split_dir(split)
        folders = {m: osp.join(root, self.MODALITY_FOLDERS[m]) for m in self.modalities}
        names = pair_by_name(folders, f'{self.dataset_name} split {split!r} (flat layout)')
        records = []
        for name in names:
            path = osp.join(folders[self.modalities[0]], name)
            record = dict(
                img_paths=[osp.join(folders[m], name) for m in self.modalities],
                tile_indices=None,
            )
            record.update(parse_wmveid863_flat_name(name, path))
            records.append(record)
        records.sort(key=lambda r: (r['gt_label'], osp.basename(r['img_paths'][0])))
        return records
