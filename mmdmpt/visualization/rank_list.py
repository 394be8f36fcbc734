"""Rank-list pictures: a query's modalities and its top-k gallery samples.

One row: the query (blue frame), then its nearest gallery samples, nearest
first, each framed in green (same identity: a true match) or red (another
identity). Every sample shows its modalities side by side; an absent
modality is a grey box with its name. The gallery samples the evaluation
removes from the query's ranking (same identity and same camera, or same
scene for benchmarks with scene ids) are hidden, so the row is exactly the
ranking the metric scores; the legend says so.
"""

import os
import os.path as osp
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mmdmpt.structures import MODALITIES

__all__ = [
    'MATCH_COLOR',
    'MISMATCH_COLOR',
    'QUERY_COLOR',
    'UNJUDGED_COLOR',
    'RankListLayout',
    'rank_list_layout',
    'draw_rank_list',
    'select_queries',
    'save_image',
]

#: Frame colours (RGB).
MATCH_COLOR = (0, 255, 0)
MISMATCH_COLOR = (255, 0, 0)
QUERY_COLOR = (0, 0, 255)
UNJUDGED_COLOR = (96, 96, 96)  # a result not judged (no threshold)
ABSENT_COLOR = (128, 128, 128)
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)

BORDER = 4  # frame width around a sample
INNER_GAP = 2  # between the modalities of a sample
GROUP_GAP = 8  # between gallery samples
QUERY_GAP = 24  # between the query and the first gallery sample
MARGIN = 8
LINE_H = 14  # one line of text
LABEL_LINES = 2  # text lines above each sample
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4

DEFAULT_LEGEND = (
    'frame: blue = query, green = same identity (true match), red = different identity',
)

Images = Sequence[Optional[np.ndarray]]
GalleryEntry = Tuple[Images, bool, float, int]


@dataclass
class RankListLayout:
    """Pixel layout of a rank-list picture.

    Boxes are ``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive and include
    the coloured frame.

    Attributes:
        height (int): Picture height.
        width (int): Picture width (grown later to fit long text lines).
        query_box (tuple): The query's framed box.
        gallery_boxes (list[tuple]): The framed box of each gallery sample.
        tile_size (tuple[int, int]): ``(h, w)`` of one modality image.
        num_modalities (int): Modalities per sample.
        title_y (int): Baseline of the title line.
        legend_y (int): Baseline of the first legend line.
    """

    height: int
    width: int
    query_box: Tuple[int, int, int, int]
    gallery_boxes: List[Tuple[int, int, int, int]] = field(default_factory=list)
    tile_size: Tuple[int, int] = (128, 64)
    num_modalities: int = 3
    title_y: int = 0
    legend_y: int = 0

    def tile_boxes(self, box: Tuple[int, int, int, int]) -> List[Tuple[int, int, int, int]]:
        """The image boxes of the modalities inside a framed sample box."""
        th, tw = self.tile_size
        x0, y0 = box[0] + BORDER, box[1] + BORDER
        return [
            (x0 + j * (tw + INNER_GAP), y0, x0 + j * (tw + INNER_GAP) + tw, y0 + th)
            for j in range(self.num_modalities)
        ]


def rank_list_layout(
    num_modalities: int,
    num_gallery: int,
    tile_size: Tuple[int, int] = (128, 64),
    title: bool = True,
    legend_lines: int = 1,
) -> RankListLayout:
    """Compute where everything goes in a rank-list picture.

    Args:
        num_modalities (int): Modalities per sample.
        num_gallery (int): Gallery samples shown.
        tile_size (tuple[int, int]): ``(h, w)`` of one modality image.
            Defaults to ``(128, 64)``.
        title (bool): Leave a line for a title. Defaults to True.
        legend_lines (int): Lines of legend below the row. Defaults to 1.

    Returns:
        RankListLayout: The layout.
    """
    th, tw = int(tile_size[0]), int(tile_size[1])
    group_w = num_modalities * tw + (num_modalities - 1) * INNER_GAP + 2 * BORDER
    group_h = th + 2 * BORDER
    title_y = MARGIN + LINE_H - 3 if title else 0
    top = MARGIN + (LINE_H + 4 if title else 0) + LABEL_LINES * LINE_H + 2
    query_box = (MARGIN, top, MARGIN + group_w, top + group_h)
    boxes = []
    x = query_box[2] + QUERY_GAP
    for _ in range(num_gallery):
        boxes.append((x, top, x + group_w, top + group_h))
        x += group_w + GROUP_GAP
    right = boxes[-1][2] if boxes else query_box[2]
    legend_y = top + group_h + 6 + LINE_H - 3
    height = top + group_h + 6 + legend_lines * LINE_H + MARGIN
    return RankListLayout(
        height=height,
        width=right + MARGIN,
        query_box=query_box,
        gallery_boxes=boxes,
        tile_size=(th, tw),
        num_modalities=num_modalities,
        title_y=title_y,
        legend_y=legend_y,
    )


def _default_tile_size(images: Sequence[Optional[np.ndarray]]) -> Tuple[int, int]:
    """128 px high for portrait images (persons), 64 px for landscape (vehicles)."""
    for img in images:
        if img is not None:
            h, w = img.shape[:2]
            th = 128 if h >= w else 64
            return th, max(1, int(round(th * w / h)))
    return 128, 64


def _to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f'images must be uint8, got {img.dtype}')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'images must be HxWx3 (RGB) or HxW, got shape {img.shape}')
    return img


def _text(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (int(x), int(y)), FONT, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)


def _text_width(text: str) -> int:
    return int(cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0])


def _draw_sample(
    canvas: np.ndarray,
    layout: RankListLayout,
    box: Tuple[int, int, int, int],
    imgs: Images,
    color: Tuple[int, int, int],
    modalities: Sequence[str],
    labels: Sequence[str],
) -> None:
    x0, y0, x1, y1 = box
    canvas[y0:y1, x0:x1] = color
    th, tw = layout.tile_size
    for j, (tx0, ty0, tx1, ty1) in enumerate(layout.tile_boxes(box)):
        img = imgs[j] if j < len(imgs) else None
        if img is None:
            canvas[ty0:ty1, tx0:tx1] = ABSENT_COLOR
            name = modalities[j] if j < len(modalities) else f'm{j}'
            for k, word in enumerate((name, 'absent')):
                w = _text_width(word)
                _text(canvas, word, tx0 + max(0, (tw - w) // 2), ty0 + th // 2 + k * LINE_H)
        else:
            tile = cv2.resize(_to_rgb(img), (tw, th), interpolation=cv2.INTER_AREA)
            canvas[ty0:ty1, tx0:tx1] = tile
    for k, label in enumerate(labels[:LABEL_LINES]):
        _text(canvas, label, x0, y0 - 4 - (LABEL_LINES - 1 - k) * LINE_H)


def draw_rank_list(
    query_imgs: Images,
    gallery: Sequence[GalleryEntry],
    modalities: Optional[Sequence[str]] = None,
    query_pid: Optional[int] = None,
    tile_size: Optional[Tuple[int, int]] = None,
    title: Optional[str] = None,
    legend: Optional[Sequence[str]] = None,
    query_label: Optional[str] = None,
) -> np.ndarray:
    """Draw one query and its ranked gallery samples.

    Args:
        query_imgs (Sequence[np.ndarray | None]): The query's images, one
            per modality (``HxWx3`` RGB or ``HxW`` grey, uint8); None for an
            absent modality (drawn as a grey box with its name).
        gallery (Sequence[tuple]): Ranked gallery samples, nearest first:
            ``(imgs, is_match, distance, pid)`` with ``imgs`` like
            ``query_imgs``; ``is_match`` None (not judged) gives a neutral
            grey frame.
        modalities (Sequence[str], optional): Modality names, for absent
            boxes. Defaults to None (:data:`mmdmpt.structures.MODALITIES` cut to the
            number of query images).
        query_pid (int, optional): Shown above the query. Defaults to None.
        tile_size (tuple[int, int], optional): ``(h, w)`` of one modality
            image. Defaults to None: 128 px high for portrait images, 64 px
            for landscape ones, width by the first image's aspect ratio.
        title (str, optional): A line above the row. Defaults to None.
        legend (Sequence[str], optional): Lines below the row. Defaults to
            None: a line explaining the frame colours.
        query_label (str, optional): Second label line of the query.
            Defaults to None.

    Returns:
        np.ndarray: The picture, ``HxWx3`` uint8, RGB.
    """
    num_mod = len(query_imgs)
    if num_mod == 0:
        raise ValueError('query_imgs is empty: give one image (or None) per modality')
    if modalities is None:
        modalities = MODALITIES[:num_mod] if num_mod <= len(MODALITIES) else None
        modalities = modalities or tuple(f'm{j}' for j in range(num_mod))
    for rank, entry in enumerate(gallery):
        if len(entry[0]) != num_mod:
            raise ValueError(
                f'gallery sample {rank} has {len(entry[0])} images, the query {num_mod}'
            )
    legend = DEFAULT_LEGEND if legend is None else tuple(legend)
    if tile_size is None:
        tile_size = _default_tile_size(
            list(query_imgs) + [img for entry in gallery for img in entry[0]]
        )
    layout = rank_list_layout(num_mod, len(gallery), tile_size, title is not None, len(legend))
    texts = ([title] if title else []) + list(legend)
    width = max([layout.width] + [_text_width(t) + 2 * MARGIN for t in texts])
    canvas = np.full((layout.height, width, 3), BACKGROUND, dtype=np.uint8)
    if title:
        _text(canvas, title, MARGIN, layout.title_y)
    q_labels = ['query' if query_pid is None else f'query id {query_pid}', query_label or '']
    _draw_sample(canvas, layout, layout.query_box, query_imgs, QUERY_COLOR, modalities, q_labels)
    for rank, (entry, box) in enumerate(zip(gallery, layout.gallery_boxes), 1):
        imgs, is_match, dist, pid = entry
        if is_match is None:
            color = UNJUDGED_COLOR
        else:
            color = MATCH_COLOR if is_match else MISMATCH_COLOR
        labels = [f'#{rank} id {pid}', f'd={float(dist):.4f}']
        _draw_sample(canvas, layout, box, imgs, color, modalities, labels)
    for k, line in enumerate(legend):
        _text(canvas, line, MARGIN, layout.legend_y + k * LINE_H)
    return canvas


def save_image(image: np.ndarray, path: str) -> str:
    """Write an RGB uint8 picture (PNG, JPEG, ... by extension) with OpenCV.

    Args:
        image (np.ndarray): ``HxWx3`` uint8, RGB.
        path (str): Output file; folders are created.

    Returns:
        str: ``path``.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write the image {path}')
    return str(path)


def select_queries(num_query: int, num: int) -> List[int]:
    """``num`` query indices spread evenly over ``range(num_query)``.

    Args:
        num_query (int): Number of queries.
        num (int): How many to pick.

    Returns:
        list[int]: Sorted, distinct indices (all of them when
        ``num >= num_query``).
    """
    if num_query <= 0 or num <= 0:
        return []
    if num >= num_query:
        return list(range(num_query))
    return sorted({int(i) for i in np.linspace(0, num_query - 1, num).round()})
