"""Moving a face's drifted landmarks back: a thin-plate-spline warp of the image inside a region."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.conversions import normalize_pixel_coordinates
from scipy.interpolate import RBFInterpolator
from scipy.ndimage import distance_transform_edt


def clipped_goal(found: np.ndarray, reference: np.ndarray, tolerance: float | np.ndarray,
                 eye_distance: float) -> np.ndarray:
    """``found`` (N, 2) with every point farther than ``tolerance`` (one for all, or (N,) one per point) x
    ``eye_distance`` from its reference point moved along the line between them to exactly that distance; the
    others stay."""
    offset = found - reference
    length = np.linalg.norm(offset, axis=1, keepdims=True)
    limit = np.reshape(tolerance, (-1, 1)) * eye_distance
    return reference + offset * np.minimum(1.0, limit / np.maximum(length, 1e-9))


def point_displacement(found: np.ndarray, goal: np.ndarray, fixed: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The thin-plate spline that takes each ``goal`` point (N, 2, pixels) back to its ``found`` point and leaves
    the ``fixed`` points (M, 2) where they are: a function from query points (Q, 2) to their displacements (Q, 2),
    where a warped image samples the original (query + displacement)."""
    points = np.concatenate([goal, fixed])
    displacement = np.concatenate([found - goal, np.zeros_like(fixed)])
    spline = RBFInterpolator(points, displacement, kernel="thin_plate_spline")
    largest = np.linalg.norm(displacement, axis=1).max()

    def displace(query: np.ndarray) -> np.ndarray:
        moved = spline(query)
        # Between its points a spline can overshoot; no pixel moves farther than the farthest point does.
        return moved * np.minimum(1.0, largest / np.maximum(np.linalg.norm(moved, axis=-1, keepdims=True), 1e-9))

    return displace


def warp_points(image: torch.Tensor, displace: Callable[[np.ndarray], np.ndarray],
                region: torch.Tensor) -> torch.Tensor:
    """``image`` (1, C, H, W) warped by ``displace`` (:func:`point_displacement`: its content at the found points
    lands on their goals, the fixed points unmoved), the displacement scaled by ``region`` (1, 1, H, W) in [0, 1]
    and faded towards its edge. Pixels where ``region`` is 0 are returned bit for bit and are not read into it."""
    _, _, h, w = image.shape
    inside = region[0, 0] > 0
    ys, xs = torch.nonzero(inside, as_tuple=True)
    if len(ys) == 0:
        return image
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    grid_y, grid_x = np.mgrid[y0:y1, x0:x1]
    moved = displace(np.stack([grid_x.ravel(), grid_y.ravel()], 1)).reshape(y1 - y0, x1 - x0, 2)
    # Towards pixels outside the region (a kept hair strand) the displacement fades from 0 one pixel away over twice
    # its largest size: a steeper fall-off folds and tears the image along the region's edge, and the pixels beside
    # the edge read what is outside it (the strand copied beside itself as a pale ghost).
    reach = max(2 * float(np.linalg.norm(moved, axis=-1).max()), 1e-6)
    ramp = np.clip((distance_transform_edt(inside[y0:y1, x0:x1].cpu().numpy()) - 1) / reach, 0, 1)
    scale = torch.minimum(region[0, 0, y0:y1, x0:x1], torch.as_tensor(ramp, dtype=image.dtype, device=image.device))
    shift = torch.as_tensor(moved, dtype=image.dtype, device=image.device) * scale[..., None]
    base = create_meshgrid(h, w, normalized_coordinates=False, device=image.device, dtype=image.dtype)  # (1, H, W, xy)
    base[0, y0:y1, x0:x1] += shift
    warped = F.grid_sample(image, normalize_pixel_coordinates(base, h, w), mode="bilinear", padding_mode="border",
                           align_corners=True)
    return torch.where(inside, warped, image)
