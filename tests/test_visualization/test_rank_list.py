import cv2
import numpy as np
import pytest

from mmdmpt.datasets import load_sample_images
from mmdmpt.registry import VISUALIZERS
from mmdmpt.visualization import (
    MATCH_COLOR,
    MISMATCH_COLOR,
    QUERY_COLOR,
    ReIDVisualizer,
    draw_rank_list,
    rank_list_layout,
    select_queries,
)
from mmdmpt.visualization.rank_list import ABSENT_COLOR

TILE = (40, 20)


def _const(rgb, shape=(80, 40)):
    return np.full(shape + (3,), rgb, np.uint8)


def _inner(box, d=1):
    return box[1] + d, box[0] + d  # (y, x) inside the frame


def test_draw_rank_list_layout_colours_and_absent_tiles():
    query = [_const((10, 20, 30)), None, np.full((80, 40), 77, np.uint8)]
    gallery = [
        ([_const((200, 100, 50))] * 3, True, 0.1, 5),
        ([_const((1, 2, 3)), _const((4, 5, 6)), None], False, 0.2, 6),
    ]
    img = draw_rank_list(query, gallery, query_pid=5, tile_size=TILE, title='t')
    layout = rank_list_layout(3, 2, TILE, title=True, legend_lines=1)
    assert img.dtype == np.uint8 and img.shape[0] == layout.height
    assert img.shape[1] >= layout.width
    assert tuple(img[_inner(layout.query_box)]) == QUERY_COLOR
    assert tuple(img[_inner(layout.gallery_boxes[0])]) == MATCH_COLOR
    assert tuple(img[_inner(layout.gallery_boxes[1])]) == MISMATCH_COLOR
    # Right / bottom edges of the frame too.
    x1, y1 = layout.gallery_boxes[1][2] - 1, layout.gallery_boxes[1][3] - 1
    assert tuple(img[y1, x1]) == MISMATCH_COLOR
    # Images land in their tiles (modalities side by side); absent tiles are grey.
    q_tiles = layout.tile_boxes(layout.query_box)
    assert tuple(img[q_tiles[0][1] + 2, q_tiles[0][0] + 2]) == (10, 20, 30)
    assert tuple(img[q_tiles[1][1] + 2, q_tiles[1][0] + 2]) == ABSENT_COLOR
    assert tuple(img[q_tiles[2][1] + 2, q_tiles[2][0] + 2]) == (77, 77, 77)
    g_tiles = layout.tile_boxes(layout.gallery_boxes[1])
    assert tuple(img[g_tiles[1][1] + 2, g_tiles[1][0] + 2]) == (4, 5, 6)
    assert tuple(img[g_tiles[2][1] + 2, g_tiles[2][0] + 2]) == ABSENT_COLOR
    assert [b[0] < c[0] for b, c in zip(q_tiles, q_tiles[1:])] == [True, True]


def test_draw_rank_list_default_tile_size_and_errors():
    img = draw_rank_list([_const((9, 9, 9), (256, 128))], [], title=None, legend=())
    layout = rank_list_layout(1, 0, (128, 64), title=False, legend_lines=0)
    assert img.shape[:2] == (layout.height, layout.width)
    with pytest.raises(ValueError, match='gallery sample 0 has 1 images, the query 2'):
        draw_rank_list([None, None], [([None], True, 0.0, 1)])
    with pytest.raises(ValueError, match='empty'):
        draw_rank_list([], [])


def test_select_queries():
    assert select_queries(10, 3) == [0, 4, 9]
    assert select_queries(3, 8) == [0, 1, 2]
    assert select_queries(0, 3) == [] and select_queries(5, 0) == []


def test_load_sample_images_reads_rgb_and_skips_absent(tmp_path):
    rgb = np.zeros((8, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    paths = [str(tmp_path / 'a.png'), str(tmp_path / 'b.png')]
    cv2.imwrite(paths[0], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(paths[1], np.full((8, 4), 50, np.uint8))
    imgs = load_sample_images(dict(img_paths=paths, modalities=('rgb', 'tir')))
    assert tuple(imgs[0][0, 0]) == (200, 0, 0) and tuple(imgs[1][0, 0]) == (50, 50, 50)
    imgs = load_sample_images(
        dict(img_paths=[paths[0], 'gone.png'], modalities=('rgb', 'tir')), [True, False]
    )
    assert imgs[1] is None and imgs[0].shape == (8, 4, 3)


def test_reid_visualizer_registered_and_writes_png(tmp_path):
    vis = VISUALIZERS.build(dict(type='ReIDVisualizer', name='test_reid_visualizer'))
    assert isinstance(vis, ReIDVisualizer)
    out = str(tmp_path / 'sub' / 'rank.png')
    image, path = vis.add_rank_list(
        'rank',
        [_const((1, 1, 1))],
        [([_const((2, 2, 2))], True, 0.5, 3)],
        out_file=out,
        tile_size=TILE,
    )
    back = cv2.imread(path)
    assert back.shape == image.shape
    np.testing.assert_array_equal(back[..., ::-1], image)  # written as BGR
    np.testing.assert_array_equal(vis.get_image(), image)
