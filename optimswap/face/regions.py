"""Facial regions as soft masks in the aligned frame: eyes, brows, lips, skin.

Each region is drawn from the 68 iBUG landmarks, or, when the face's 478-point MediaPipe mesh is given
(``dense``, frame pixels), from the mesh's own contours: the lid margins (the eyeball, iris included, exactly),
the brow outlines, the lip lines and the face oval (``optimswap.face.mesh``).
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.morphology import dilation, erosion
from scipy.spatial import ConvexHull

from optimswap.face.align import BROWS, LEFT_EYE, RIGHT_EYE, eye_centres, interocular
from optimswap.face.mask import face_polygon, grow, polygon_mask, soften
from optimswap.face.mesh import (
    FACE_OVAL,
    LEFT_BROW_LOWER,
    LEFT_BROW_UPPER,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    RIGHT_BROW_LOWER,
    RIGHT_BROW_UPPER,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
)

OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)
LEFT_BROW, RIGHT_BROW = slice(17, 22), slice(22, 27)
LOWER_LID = [0, 5, 4, 3]  # of an eye's six points: outer corner, lower lid, inner corner
LOWER_BAND = 0.2  # eye distances below the lower lid that the eye makeup region reaches
# Per eye on the mesh, image left (the subject's right) first: lid margins and brow outlines, corner to corner.
MESH_EYES = ((RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_BROW_UPPER, RIGHT_BROW_LOWER),
             (LEFT_EYE_UPPER, LEFT_EYE_LOWER, LEFT_BROW_UPPER, LEFT_BROW_LOWER))


def _outline(dense: np.ndarray, upper: list[int], lower: list[int]) -> np.ndarray:
    """Closed polygon (M, 2) of two mesh contours that share their end points (upper, then lower walked back)."""
    return dense[upper + lower[-2:0:-1], :2]


def _eye_openings(dense: np.ndarray) -> list[np.ndarray]:
    return [_outline(dense, upper, lower) for upper, lower, _, _ in MESH_EYES]


def _brow_outlines(dense: np.ndarray) -> list[np.ndarray]:
    return [_outline(dense, upper, lower) for _, _, upper, lower in MESH_EYES]


def union(masks: list[torch.Tensor]) -> torch.Tensor:
    """Pixel-wise maximum of same-shaped masks."""
    return torch.stack(list(masks)).amax(0)


def eyes_mask(landmarks: np.ndarray, size: int, margin: float = 0.0, device="cpu",
              dense: np.ndarray | None = None) -> torch.Tensor:
    """Both eye openings (between the lid margins), grown by ``margin`` pixels; hard (1, 1, S, S)."""
    openings = [landmarks[s] for s in (LEFT_EYE, RIGHT_EYE)] if dense is None else _eye_openings(dense)
    return union([polygon_mask(grow(opening, margin), size, device) for opening in openings])


def brows_mask(landmarks: np.ndarray, size: int, thickness: float, device="cpu",
               dense: np.ndarray | None = None) -> torch.Tensor:
    """Both brows as bands ``thickness`` pixels thick around their 5-point centre lines, or, from the mesh, the
    brows' own outlines (``thickness`` unused); hard."""
    if dense is not None:
        return union([polygon_mask(brow, size, device) for brow in _brow_outlines(dense)])
    bands = []
    for s in (LEFT_BROW, RIGHT_BROW):
        line = landmarks[s]
        band = np.concatenate([line - [0, thickness / 2], (line + [0, thickness / 2])[::-1]])
        bands.append(polygon_mask(band, size, device))
    return union(bands)


def lips_mask(landmarks: np.ndarray, size: int, feather: float = 0.0, device="cpu",
              dense: np.ndarray | None = None) -> torch.Tensor:
    """Outer lip polygon minus the mouth opening; hard, or with ``feather`` (sigma as a fraction of ``size``, as for
    the other regions) feathered outwards into the skin only: 1 on the lips however thin they are (softened, a
    5-pixel lip peaked at ~0.5 and kept half its colour), and the opening (teeth, tongue) never lips."""
    if dense is None:
        outer_line, inner_line = landmarks[OUTER_LIPS], landmarks[INNER_LIPS]
    else:
        outer_line = _outline(dense, LIPS_OUTER_UPPER, LIPS_OUTER_LOWER)
        inner_line = _outline(dense, LIPS_INNER_UPPER, LIPS_INNER_LOWER)
    outer, inner = polygon_mask(outer_line, size, device), polygon_mask(inner_line, size, device)
    lips = (outer - inner).clamp(0, 1)
    if feather <= 0:
        return lips
    return union([lips, soften(lips, max(feather * size, 0.5))]) * (1 - inner)


def forehead_mask(landmarks: np.ndarray, size: int, device="cpu") -> torch.Tensor:
    """(1, 1, S, S) for an upright face (frame pixels): 0 at and below the brows' top, rising linearly to 1 one
    brow-to-eye gap above it."""
    brow_top = landmarks[BROWS, 1].min()
    gap = max(np.mean([centre[1] for centre in eye_centres(landmarks)]) - landmarks[BROWS, 1].mean(), 1.0)
    ys = np.arange(size, dtype=np.float64)[:, None]
    ramp = np.broadcast_to(np.clip((brow_top - ys) / gap, 0, 1), (size, size))
    return torch.as_tensor(ramp.astype(np.float32), device=device)[None, None]


def _lower_lids(landmarks: np.ndarray, dense: np.ndarray | None) -> list[np.ndarray]:
    """Each eye's lower lid, corner to corner (image left eye first)."""
    if dense is None:
        return [landmarks[eye][LOWER_LID] for eye in (LEFT_EYE, RIGHT_EYE)]
    return [dense[lower, :2] for _, lower, _, _ in MESH_EYES]


def _brow_points(landmarks: np.ndarray, dense: np.ndarray | None) -> list[np.ndarray]:
    if dense is None:
        return [landmarks[brow] for brow in (LEFT_BROW, RIGHT_BROW)]
    return _brow_outlines(dense)


def _fade_below_lids(lids: list[np.ndarray], drop: float, size: int, device) -> torch.Tensor:
    """(1, 1, S, S): 1 down to the lower lid of the nearer eye, falling linearly to 0 ``drop`` pixels below it."""
    xs, ys = np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64)[:, None]
    middle = np.mean([lid[:, 0].mean() for lid in lids])
    lid_y = np.empty(size)
    for lid in lids:
        order = np.argsort(lid[:, 0])
        side = xs < middle if lid[:, 0].mean() < middle else xs >= middle
        lid_y[side] = np.interp(xs[side], lid[order, 0], lid[order, 1])
    fade = np.clip(1 - (ys - lid_y[None]) / drop, 0, 1)
    return torch.as_tensor(fade, dtype=torch.float32, device=device)[None, None]


def eye_shadow_mask(landmarks: np.ndarray, size: int, feather: float = 0.015, device="cpu",
                    dense: np.ndarray | None = None) -> torch.Tensor:
    """Band around each eye below the brow: from the brow line down to the lower lid, then fading out over a fifth of
    the eye distance below it, minus the brows and the eye itself (dlib's feathered; the mesh's eyeball between the
    lid margins exactly); soft."""
    eye_distance = interocular(landmarks)
    sigma = max(feather * size, 0.5)
    lids = _lower_lids(landmarks, dense)
    bands = []
    for brow, lower_lid in zip(_brow_points(landmarks, dense), lids, strict=True):
        outline = np.concatenate([brow, lower_lid + [0, LOWER_BAND * eye_distance]])
        bands.append(polygon_mask(outline[ConvexHull(outline).vertices], size, device))
    # Brow hair is ~0.12 eye distances thick. The lid between brow and eye is narrow, so this band is feathered
    # by half the usual width to keep its full strength there.
    eyes = eyes_mask(landmarks, size, 0.0, device, dense)
    band = soften(union(bands) * (1 - union([eyes, brows_mask(landmarks, size, 0.12 * eye_distance, device, dense)])),
                  sigma / 2)
    # Under the eye the band fades out instead of ending: a tinted under-eye (a tanned or blushed reference) ended in
    # an edge, an orange crescent (plain 06 x makeup 03, 05 x 05).
    band = band * _fade_below_lids(lids, LOWER_BAND * eye_distance, size, device)
    # The mesh's lid margins are exact, so its eyeball is cut hard: the feather would tint the white and the iris.
    return band if dense is None else band * (1 - eyes)


def lower_lid_mask(landmarks: np.ndarray, size: int, device="cpu", dense: np.ndarray | None = None) -> torch.Tensor:
    """Band under each eye from the lower lid (corner to corner) down LOWER_BAND eye distances, the lower part of
    ``eye_shadow_mask``; hard."""
    drop = [0, LOWER_BAND * interocular(landmarks)]
    return union([polygon_mask(np.concatenate([lid, (lid + drop)[::-1]]), size, device)
                  for lid in _lower_lids(landmarks, dense)])


def skin_mask(landmarks: np.ndarray, size: int, forehead: float = 0.6, feather: float = 0.015,
              device="cpu", dense: np.ndarray | None = None) -> torch.Tensor:
    """Face hull (jaw + lifted brows, or the mesh's face oval; ``forehead`` is dlib's) minus eyes, brows and mouth,
    each excluded with a margin; soft.

    The margin (a twentieth of the eye distance, to keep lashes, brow hair and lip edges out, plus two feather
    widths) is a morphological dilation of the features and erosion of the hull, so the softened skin is ~0
    on every excluded feature.
    """
    sigma = max(feather * size, 0.5)
    kernel = margin_kernel(landmarks, sigma, device)
    outline = face_polygon(landmarks, forehead) if dense is None else dense[FACE_OVAL, :2]
    hull = erosion(polygon_mask(outline, size, device), kernel)
    return soften(hull * (1 - dilation(features_mask(landmarks, size, device, dense), kernel)), sigma)


def margin_kernel(landmarks: np.ndarray, sigma: float, device="cpu") -> torch.Tensor:
    """The structuring element of skin_mask's margin (lashes, brow hair and lip edges): a twentieth of the eye
    distance plus two widths of its softening ``sigma`` (pixels)."""
    radius = int(round(0.05 * interocular(landmarks) + 2 * sigma))
    return torch.ones(2 * radius + 1, 2 * radius + 1, device=device)


def features_mask(landmarks: np.ndarray, size: int, device="cpu", dense: np.ndarray | None = None) -> torch.Tensor:
    """(1, 1, S, S) hard: the eyes, brows and lips (grown by ``margin_kernel``, they are what skin leaves out)."""
    lips = landmarks[OUTER_LIPS] if dense is None else _outline(dense, LIPS_OUTER_UPPER, LIPS_OUTER_LOWER)
    return union([eyes_mask(landmarks, size, 0.0, device, dense),
                  brows_mask(landmarks, size, 0.2 * interocular(landmarks), device, dense),
                  polygon_mask(lips, size, device)])


__all__ = ["brows_mask", "eye_shadow_mask", "eyes_mask", "features_mask", "lips_mask", "lower_lid_mask",
           "margin_kernel", "skin_mask", "union"]
