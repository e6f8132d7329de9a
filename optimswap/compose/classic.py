"""Classic landmark face swap, the baseline the optimization must beat (faceswap/DeepFaceLab's convert step):
pick the target photo whose landmark shape is closest, warp it piecewise-affinely onto the source's landmarks,
match its colour to the source face (Lab mean/std) and Poisson-blend it in (cv2.seamlessClone)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from matplotlib.path import Path as PolyPath
from scipy.spatial import Delaunay

from optimswap.compose.color import match_color
from optimswap.face.align import BROWS, JAW, NOSE_BRIDGE, interocular, shape_distance
from optimswap.face.mask import face_polygon
from optimswap.io.image import to_numpy, to_tensor

# Brows lifted by this many nose-bridge lengths top the blended region: high enough to take the target's brows
# and lower forehead, low enough to stay below most hairlines (higher, the Poisson border runs through hair).
FOREHEAD = 0.3
# Ring of warp points around the face (jaw and brows lifted by OUTER_FOREHEAD, pushed out from the landmark
# centroid by OUTER_SCALE), so that triangles cover the cheek and forehead edges of the blended region.
OUTER_FOREHEAD = 0.8
OUTER_SCALE = 1.3
# The clone border is pulled this many eye distances inside the face outline so that it lies on skin, and the
# Poisson result is faded into the source over the last FEATHER eye distances inside it.
ERODE = 0.05
FEATHER = 0.05
OUTER_LIPS, INNER_LIPS = np.arange(48, 60), np.arange(60, 68)
# Fixed iBUG mesh inside the outer lip line (48-59): upper lip, lower lip, then the mouth opening (inner lips
# 60-67), which has no area on a closed mouth. Delaunay alone joins upper and lower lip points across a closed mouth,
# which would map an open target mouth onto the lips.
LIP_TRIANGLES = np.array([
    (48, 49, 60), (49, 50, 61), (49, 61, 60), (50, 51, 62), (50, 62, 61),
    (51, 52, 62), (52, 63, 62), (52, 53, 63), (53, 64, 63), (53, 54, 64),
    (54, 55, 64), (55, 56, 65), (55, 65, 64), (56, 57, 66), (56, 66, 65),
    (57, 58, 66), (58, 67, 66), (58, 59, 67), (59, 60, 67), (59, 48, 60),
])
MOUTH_OPENING_TRIANGLES = np.array([(60, 61, 67), (61, 62, 67), (62, 66, 67), (62, 63, 66), (63, 65, 66), (63, 64, 65)])
# seamlessClone zeroes the mask's outermost pixel ring, erodes the mask by 3 px and holds its box border fixed: the
# pictures are padded by reflection (the mask by replication) so that a face cut by the photo edge is cloned up to it.
PAD = 8
MIN_TRIANGLE_AREA = 1e-3  # px^2; degenerate triangles (e.g. the mouth opening of a closed mouth) are left out


def _check_landmarks(landmarks: np.ndarray, name: str) -> np.ndarray:
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"{name}: expected (68, 2) iBUG landmarks, got shape {landmarks.shape}")
    return landmarks


def _check_photo(photo: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(photo, np.ndarray) or photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"{name}: expected an RGB uint8 (H, W, 3) array, got "
                         f"{getattr(photo, 'dtype', type(photo))} {getattr(photo, 'shape', '')}")
    return photo


def shape_distances(source_landmarks: np.ndarray, candidates: Sequence[np.ndarray]) -> list[float]:
    """Procrustes shape distance (face.align.shape_distance) from the source's landmarks to each candidate's."""
    source_landmarks = _check_landmarks(source_landmarks, "source landmarks")
    if len(candidates) == 0:
        raise ValueError("no candidate landmarks to choose from")
    return [shape_distance(source_landmarks, _check_landmarks(c, f"candidate {i}")) for i, c in enumerate(candidates)]


def choose_target(source_landmarks: np.ndarray, candidates: Sequence[np.ndarray]) -> int:
    """Index of the candidate landmark set (68, 2) closest in shape (pose, expression) to the source's."""
    return int(np.argmin(shape_distances(source_landmarks, candidates)))


OUTER_RING = slice(78, 105)  # of face_points: the ring around the face (after the 68 landmarks and the forehead line)


def face_points(landmarks: np.ndarray) -> np.ndarray:
    """(105, 2) warp points: the 68 landmarks, the brows lifted to the blended forehead line and an outer ring."""
    landmarks = _check_landmarks(landmarks, "landmarks")
    bridge = landmarks[NOSE_BRIDGE.stop] - landmarks[NOSE_BRIDGE.start]  # points down the nose
    forehead_line = landmarks[BROWS] - FOREHEAD * bridge
    outline = np.concatenate([landmarks[JAW], landmarks[BROWS] - OUTER_FOREHEAD * bridge])
    centre = landmarks.mean(0)
    return np.concatenate([landmarks, forehead_line, centre + OUTER_SCALE * (outline - centre)])


def face_triangles(landmarks: np.ndarray) -> np.ndarray:
    """(T, 3) indices into ``face_points(landmarks)`` in drawing order (later triangles win on shared edge pixels):
    the Delaunay triangulation of those points without the inner lips, less its triangles inside the outer lip
    line, then the fixed mouth mesh in their place, its opening before its lips."""
    points = face_points(landmarks)
    outside_mouth = np.setdiff1d(np.arange(len(points)), INNER_LIPS)
    triangles = outside_mouth[Delaunay(points[outside_mouth]).simplices]
    triangles = triangles[~PolyPath(points[OUTER_LIPS]).contains_points(points[triangles].mean(1))]
    return np.concatenate([_smallest_first(triangles, points), MOUTH_OPENING_TRIANGLES, LIP_TRIANGLES])


def _triangle_areas(corners: np.ndarray) -> np.ndarray:
    edges = corners[:, 1:] - corners[:, :1]
    return 0.5 * np.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0])


def _smallest_first(triangles: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pixels on shared edges then take the bigger triangle's map, not a sliver's wild extrapolation."""
    return triangles[np.argsort(_triangle_areas(points[triangles]), kind="stable")]


def piecewise_affine_warp(image: np.ndarray, points_from: np.ndarray, points_to: np.ndarray, out_shape: tuple[int, int],
                          triangles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so that ``points_from`` (N, 2) (x, y pixels of ``image``) land on ``points_to`` (N, 2) in an
    ``out_shape`` (H, W) picture. Returns the warped image (zero where undefined) and the (H, W) bool mask of
    the pixels it defines: inside a triangle (at ``points_to``) and mapped from inside ``image``.

    ``triangles`` (T, 3): indices into the points, drawn in this order (a later one wins on shared edge pixels);
    by default the Delaunay triangulation of ``points_to``, smallest first. Triangles with less than
    ``MIN_TRIANGLE_AREA`` in ``points_to`` are skipped. Each output pixel is labelled with its triangle, mapped
    through that triangle's affine map and sampled bilinearly in one ``cv2.remap``.
    """
    points_from, points_to = np.asarray(points_from, np.float64), np.asarray(points_to, np.float64)
    if points_from.ndim != 2 or points_from.shape[1] != 2 or points_from.shape != points_to.shape:
        raise ValueError(f"points_from and points_to must both be (N, 2), got {points_from.shape} and "
                         f"{points_to.shape}")
    if len(points_to) < 3:
        raise ValueError(f"need at least 3 points to triangulate, got {len(points_to)}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got {image.shape}")
    height, width = out_shape
    warped = np.zeros((height, width) + image.shape[2:], image.dtype)
    defined = np.zeros((height, width), bool)

    if triangles is None:
        triangles = _smallest_first(Delaunay(points_to).simplices, points_to)
    triangles = np.asarray(triangles)
    if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.min() < 0 or triangles.max() >= len(points_to):
        raise ValueError(f"triangles must be (T, 3) indices into the {len(points_to)} points")
    triangles = triangles[_triangle_areas(points_to[triangles]) > MIN_TRIANGLE_AREA]
    corners_to, corners_from = points_to[triangles], points_from[triangles]  # (T, 3, 2)
    # Row t holds triangle t's affine map from output to image pixels, x' = c0 x + c1 y + c2, y' = c3 x + c4 y + c5;
    # the last row sends pixels outside every triangle to (-1, -1), outside the image.
    homogeneous = np.concatenate([corners_to, np.ones(corners_to.shape[:2] + (1,))], axis=2)
    affine = np.linalg.solve(homogeneous, corners_from).transpose(0, 2, 1).reshape(-1, 6)
    coefficients = np.concatenate([affine, [[0, 0, -1, 0, 0, -1]]]).astype(np.float32)

    x0, y0 = np.floor(points_to.min(0)).astype(int).clip(0, [width, height])
    x1, y1 = (np.ceil(points_to.max(0)).astype(int) + 1).clip(0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return warped, defined
    labels = np.full((y1 - y0, x1 - x0), len(affine), np.int32)
    shift = 8  # fixed-point bits for sub-pixel vertices
    for index, corners in enumerate(corners_to):
        vertices = np.round((corners - [x0, y0]) * (1 << shift)).astype(np.int32)
        cv2.fillConvexPoly(labels, vertices, index, lineType=cv2.LINE_8, shift=shift)
    c = coefficients[labels]  # (h, w, 6)
    xs = np.arange(x0, x1, dtype=np.float32)[None]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    map_x = c[..., 0] * xs + c[..., 1] * ys + c[..., 2]
    map_y = c[..., 3] * xs + c[..., 4] * ys + c[..., 5]
    source_height, source_width = image.shape[:2]
    box = (slice(y0, y1), slice(x0, x1))
    defined[box] = (map_x >= 0) & (map_x <= source_width - 1) & (map_y >= 0) & (map_y <= source_height - 1)
    remapped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    remapped[~defined[box]] = 0
    warped[box] = remapped
    return warped, defined


def clone_mask(landmarks: np.ndarray, shape: tuple[int, int], forehead: float = FOREHEAD) -> np.ndarray:
    """(H, W) bool: the face outline (jaw, brows lifted by ``forehead`` nose-bridge lengths) pulled ``ERODE`` eye
    distances inwards."""
    landmarks = _check_landmarks(landmarks, "landmarks")
    shift = 8
    polygon = np.round(face_polygon(landmarks, forehead) * (1 << shift)).astype(np.int32)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [polygon], 1, lineType=cv2.LINE_8, shift=shift)
    radius = max(1, round(ERODE * interocular(landmarks)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def transfer_color(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the Lab mean/std of ``reference`` inside ``mask`` (compose.color.match_color), computed on
    the mask's bounding box; pixels outside that box are returned unchanged."""
    out = image.copy()
    if not mask.any():
        return out
    box = _bounding_box(mask)
    region = torch.from_numpy(mask[box].astype(np.float32))[None, None]
    out[box] = to_numpy(match_color(to_tensor(image[box]), to_tensor(reference[box]), region, region))
    return out


def poisson_blend(foreground: np.ndarray, background: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    """``cv2.seamlessClone`` (normal clone) of ``foreground`` into ``background`` (same size) inside ``mask``.

    The pictures are padded first (see ``PAD``). OpenCV solves the Poisson equation on the mask's bounding box,
    so it also shifts pixels outside the mask (by up to ~25 levels): its change is faded out over the last
    ``feather`` pixels inside the mask, and pixels outside ``mask`` are the ``background``'s, bit for bit.
    """
    if foreground.shape != background.shape or mask.shape != background.shape[:2]:
        raise ValueError(f"foreground {foreground.shape}, background {background.shape} and mask {mask.shape} differ")
    if not mask.any():
        return background.copy()
    padded = [cv2.copyMakeBorder(im, PAD, PAD, PAD, PAD, cv2.BORDER_REFLECT_101) for im in (foreground, background)]
    mask_u8 = cv2.copyMakeBorder(mask.astype(np.uint8) * 255, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
    rows, cols = _bounding_box(mask_u8)
    # OpenCV places the mask's box at (centre - size // 2): this centre puts it back exactly where it was.
    centre = (cols.start + (cols.stop - cols.start) // 2, rows.start + (rows.stop - rows.start) // 2)
    cloned = cv2.seamlessClone(padded[0], padded[1], mask_u8, centre, cv2.NORMAL_CLONE)[PAD:-PAD, PAD:-PAD]
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # 1 on its rim
    weight = np.clip(inside / max(feather, 1.0), 0, 1)[..., None]
    box = _bounding_box(mask)
    faded = np.rint(background[box] + weight[box] * (cloned[box].astype(np.float32) - background[box]))
    result = background.copy()
    result[box] = np.where(mask[box][..., None], faded.astype(np.uint8), background[box])
    return result


def classic_swap(source_photo: np.ndarray, source_landmarks: np.ndarray, target_photos: Sequence[np.ndarray],
                 target_landmarks: Sequence[np.ndarray], keep: np.ndarray | None = None,
                 target_keep: Sequence[np.ndarray] | None = None,
                 forehead: float = FOREHEAD) -> tuple[np.ndarray, dict]:
    """Put the face of the best-matching target photo onto the source photo.

    ``keep``: optional (H, W) bool/float mask; source pixels where it is > 0 (occluders) stay as they are.
    ``target_keep``: optional masks (H', W') of each target photo's own occluders, which are never pasted.
    ``forehead``: how far above the brows the pasted face reaches, in nose-bridge lengths (see ``FOREHEAD``).
    Returns the (H, W, 3) uint8 result and ``{"index", "shape_distances", "mask"}``: the chosen target, every
    candidate's shape distance to the source, and the (H, W) bool clone mask (outside it the result is the source).
    """
    source_photo = _check_photo(source_photo, "source photo")
    source_landmarks = _check_landmarks(source_landmarks, "source landmarks")
    if len(target_photos) != len(target_landmarks):
        raise ValueError(f"{len(target_photos)} target photos but {len(target_landmarks)} landmark sets")
    height, width = source_photo.shape[:2]
    if keep is not None and np.shape(keep) != (height, width):
        raise ValueError(f"keep must be (H, W) = {(height, width)} like the source photo, got {np.shape(keep)}")
    for i, photo in enumerate(target_photos):
        _check_photo(photo, f"target photo {i}")
    distances = shape_distances(source_landmarks, target_landmarks)
    index = int(np.argmin(distances))

    warped, defined = piecewise_affine_warp(target_photos[index], face_points(target_landmarks[index]),
                                            face_points(source_landmarks), (height, width),
                                            face_triangles(source_landmarks))
    mask = clone_mask(source_landmarks, (height, width), forehead) & defined
    if keep is not None:
        mask &= ~(np.asarray(keep) > 0)
    if target_keep is not None:
        occluded, _ = piecewise_affine_warp(np.asarray(target_keep[index], np.float32),
                                            face_points(target_landmarks[index]), face_points(source_landmarks),
                                            (height, width), face_triangles(source_landmarks))
        mask &= ~(occluded > 0.5)
    matched = transfer_color(warped, source_photo, mask)
    result = poisson_blend(matched, source_photo, mask, FEATHER * interocular(source_landmarks))
    return result, {"index": index, "shape_distances": distances, "mask": mask}
