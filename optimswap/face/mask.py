"""Soft face mask from 68 landmarks: jaw line plus a forehead raised above the brows, feathered."""

from __future__ import annotations

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from matplotlib.path import Path as PolyPath
from scipy.spatial import ConvexHull

from optimswap.face.align import BROWS, JAW, NOSE_BRIDGE


def face_polygon(landmarks: np.ndarray, forehead: float = 0.6) -> np.ndarray:
    """Convex outline (M, 2) of jaw points and brow points lifted by ``forehead`` x nose-bridge length."""
    bridge = landmarks[NOSE_BRIDGE.stop] - landmarks[NOSE_BRIDGE.start]  # points down the nose
    brows = landmarks[BROWS] - forehead * bridge
    pts = np.concatenate([landmarks[JAW], brows])
    return pts[ConvexHull(pts).vertices]


def face_mask(landmarks: np.ndarray, size: int, forehead: float = 0.6, feather: float = 0.015,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """(1, 1, size, size) mask in [0, 1] for landmarks given in frame pixels.

    The hard polygon is grown by one feather width before blurring, so every landmark (jaw points lie on
    the outline) sits at >= 0.5 and the soft edge falls on skin/background just outside the jaw.
    """
    poly = face_polygon(landmarks, forehead)
    sigma = max(feather * size, 0.5)
    return soften(polygon_mask(grow(poly, sigma), size, device), sigma)


def grow(polygon: np.ndarray, distance: float) -> np.ndarray:
    """Move every vertex ``distance`` pixels away from the centroid (negative: shrink)."""
    centre = polygon.mean(0)
    radial = polygon - centre
    return centre + radial * (1 + distance / np.linalg.norm(radial, axis=1, keepdims=True).clip(1e-6))


def polygon_mask(polygon: np.ndarray, size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(1, 1, size, size) hard mask of the pixel centres inside ``polygon`` (M, 2) given in (x, y) pixels."""
    inside = np.zeros((size, size), bool)
    x0, y0 = np.clip(np.floor(polygon.min(0)).astype(int), 0, size)  # only the polygon's bounding box is tested
    x1, y1 = np.clip(np.ceil(polygon.max(0)).astype(int) + 1, 0, size)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    inside[y0:y1, x0:x1] = PolyPath(polygon).contains_points(points).reshape(y1 - y0, x1 - x0)
    return torch.as_tensor(inside, dtype=torch.float32, device=device)[None, None]


def soften(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian feathering of a (B, 1, H, W) mask, zero beyond the borders."""
    k = int(2 * round(3 * sigma) + 1)
    return gaussian_blur2d(mask, (k, k), (sigma, sigma), border_type="constant").clamp(0, 1)
