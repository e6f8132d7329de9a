"""Pixel masks of polygons, for planting shapes in test photos."""

import numpy as np
from matplotlib.path import Path as PolyPath


def inside(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the pixel centres inside ``polygon`` ((N, 2) x, y points)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return PolyPath(polygon).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(shape)
