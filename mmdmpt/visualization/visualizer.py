"""A visualizer that draws ReID rank lists."""

from typing import Optional, Sequence, Tuple

import numpy as np
from mmengine.dist import master_only
from mmengine.visualization import Visualizer

from mmdmpt.registry import VISUALIZERS

from .rank_list import GalleryEntry, Images, draw_rank_list, save_image


@VISUALIZERS.register_module()
class ReIDVisualizer(Visualizer):
    """MMEngine visualizer with a rank-list drawing.

    Everything of :class:`mmengine.visualization.Visualizer` (backends,
    ``add_image``, ...) plus :meth:`draw_rank_list` and
    :meth:`add_rank_list`. Config: ``visualizer = dict(type='ReIDVisualizer',
    vis_backends=[dict(type='LocalVisBackend')])``.

    Args:
        name (str): Instance name. Defaults to ``'visualizer'``.
        **kwargs: Passed to ``Visualizer`` (``vis_backends``, ``save_dir``,
            ...).
    """

    def __init__(self, name: str = 'visualizer', **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def draw_rank_list(
        self, query_imgs: Images, gallery: Sequence[GalleryEntry], **kwargs
    ) -> np.ndarray:
        """Draw a rank list and make it the current image.

        Args:
            query_imgs (Sequence[np.ndarray | None]): See
                :func:`mmdmpt.visualization.draw_rank_list`.
            gallery (Sequence[tuple]): ``(imgs, is_match, distance, pid)``
                per ranked gallery sample.
            **kwargs: Other arguments of
                :func:`~mmdmpt.visualization.draw_rank_list`.

        Returns:
            np.ndarray: The picture, RGB uint8.
        """
        image = draw_rank_list(query_imgs, gallery, **kwargs)
        self.set_image(image)
        return image

    @master_only
    def add_rank_list(
        self,
        name: str,
        query_imgs: Images,
        gallery: Sequence[GalleryEntry],
        step: int = 0,
        out_file: Optional[str] = None,
        **kwargs,
    ) -> Tuple[np.ndarray, Optional[str]]:
        """Draw a rank list and write it to ``out_file`` or the backends.

        Args:
            name (str): Image name for the backends.
            query_imgs (Sequence[np.ndarray | None]): The query's images.
            gallery (Sequence[tuple]): Ranked gallery samples.
            step (int): Backend step. Defaults to 0.
            out_file (str, optional): Write the PNG here instead of the
                backends. Defaults to None.
            **kwargs: Other arguments of
                :func:`~mmdmpt.visualization.draw_rank_list`.

        Returns:
            tuple: The picture and the file written (or None).
        """
        image = self.draw_rank_list(query_imgs, gallery, **kwargs)
        if out_file is not None:
            return image, save_image(image, out_file)
        self.add_image(name, image, step)
        return image, None
