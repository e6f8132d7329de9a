"""Facial regions from the 68 landmarks as soft masks in the aligned frame: eyes, brows, lips, skin."""

from __future__ import annotations

import numpy as np
import torch
from kornia.morphology import dilation, erosion
from scipy.spatial import ConvexHull

from optimswap.face.align import LEFT_EYE, RIGHT_EYE, interocular
from optimswap.face.mask import face_polygon, grow, polygon_mask, soften

OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)
LEFT_BROW, RIGHT_BROW = slice(17, 22), slice(22, 27)
LOWER_LID = [0, 5, 4, 3]  # of an eye's six points: outer corner, lower lid, inner corner
LOWER_BAND = 0.2  # eye distances below the lower lid that the eye makeup region reaches


def union(masks: list[torch.Tensor]) -> torch.Tensor:
    """Pixel-wise maximum of same-shaped masks."""
    return torch.stack(list(masks)).amax(0)


def eyes_mask(landmarks: np.ndarray, size: int, margin: float = 0.0, device="cpu") -> torch.Tensor:
    """Both eye openings, grown by ``margin`` pixels; hard (1, 1, S, S)."""
    return union([polygon_mask(grow(landmarks[s], margin), size, device) for s in (LEFT_EYE, RIGHT_EYE)])


def brows_mask(landmarks: np.ndarray, size: int, thickness: float, device="cpu") -> torch.Tensor:
    """Both brows as bands ``thickness`` pixels thick around their 5-point centre lines; hard."""
    bands = []
    for s in (LEFT_BROW, RIGHT_BROW):
        line = landmarks[s]
        band = np.concatenate([line - [0, thickness / 2], (line + [0, thickness / 2])[::-1]])
        bands.append(polygon_mask(band, size, device))
    return union(bands)


def lips_mask(landmarks: np.ndarray, size: int, feather: float = 0.0, device="cpu") -> torch.Tensor:
    """Outer lip polygon minus the mouth opening; hard, or with ``feather`` (sigma as a fraction of ``size``, as for
    the other regions) feathered outwards into the skin only: 1 on the lips however thin they are (softened, a
    5-pixel lip peaked at ~0.5 and kept half its colour), and the opening (teeth, tongue) never lips."""
    outer, inner = polygon_mask(landmarks[OUTER_LIPS], size, device), polygon_mask(landmarks[INNER_LIPS], size, device)
    lips = (outer - inner).clamp(0, 1)
    if feather <= 0:
        return lips
    return union([lips, soften(lips, max(feather * size, 0.5))]) * (1 - inner)


def eye_shadow_mask(landmarks: np.ndarray, size: int, feather: float = 0.015, device="cpu") -> torch.Tensor:
    """Band around each eye below the brow: from the brow line down to a fifth of the eye distance below the
    lower lid, minus the brows and the eye itself (each with a small margin); soft."""
    eye_distance = interocular(landmarks)
    sigma = max(feather * size, 0.5)
    bands = []
    for brow, eye in ((LEFT_BROW, LEFT_EYE), (RIGHT_BROW, RIGHT_EYE)):
        lower_lid = landmarks[eye][LOWER_LID] + [0, LOWER_BAND * eye_distance]
        outline = np.concatenate([landmarks[brow], lower_lid])
        bands.append(polygon_mask(outline[ConvexHull(outline).vertices], size, device))
    # Brow hair is ~0.12 eye distances thick. The lid between brow and eye is narrow, so this band is feathered
    # by half the usual width to keep its full strength there.
    cut = union([eyes_mask(landmarks, size, 0.0, device), brows_mask(landmarks, size, 0.12 * eye_distance, device)])
    return soften(union(bands) * (1 - cut), sigma / 2)


def lower_lid_mask(landmarks: np.ndarray, size: int, device="cpu") -> torch.Tensor:
    """Band under each eye from the lower lid (corner to corner) down LOWER_BAND eye distances, the lower part of
    ``eye_shadow_mask``; hard."""
    drop = [0, LOWER_BAND * interocular(landmarks)]
    bands = []
    for eye in (LEFT_EYE, RIGHT_EYE):
        lid = landmarks[eye][LOWER_LID]
        bands.append(polygon_mask(np.concatenate([lid, (lid + drop)[::-1]]), size, device))
    return union(bands)


def skin_mask(landmarks: np.ndarray, size: int, forehead: float = 0.6, feather: float = 0.015,
              device="cpu") -> torch.Tensor:
    """Face hull (jaw + lifted brows) minus eyes, brows and mouth, each excluded with a margin; soft.

    The margin (a twentieth of the eye distance, to keep lashes, brow hair and lip edges out, plus two feather
    widths) is a morphological dilation of the features and erosion of the hull, so the softened skin is ~0
    on every excluded feature.
    """
    eye_distance = interocular(landmarks)
    sigma = max(feather * size, 0.5)
    radius = int(round(0.05 * eye_distance + 2 * sigma))
    kernel = torch.ones(2 * radius + 1, 2 * radius + 1, device=device)
    hull = erosion(polygon_mask(face_polygon(landmarks, forehead), size, device), kernel)
    features = union([eyes_mask(landmarks, size, 0.0, device), brows_mask(landmarks, size, 0.2 * eye_distance, device),
                       polygon_mask(landmarks[OUTER_LIPS], size, device)])
    return soften(hull * (1 - dilation(features, kernel)), sigma)


__all__ = ["brows_mask", "eye_shadow_mask", "eyes_mask", "lips_mask", "lower_lid_mask", "skin_mask", "union"]
