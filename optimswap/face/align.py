"""Aligned working frame: similarity crop of a photo, and thin-plate-spline warps between landmark sets."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from kornia.geometry.transform import get_tps_transform, invert_affine_transform, warp_affine, warp_image_tps
from skimage.transform import SimilarityTransform

# iBUG 68-point index ranges
JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE_BRIDGE = slice(27, 31)
NOSE_WINGS = slice(31, 36)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
MOUTH = slice(48, 68)
# Inner-lip points (60-67) coincide pairwise on a closed mouth, which makes a TPS system singular.
TPS_POINTS = slice(0, 60)
# The face's outline and nose: its shape, which an expression hardly moves.
FACE_SHAPE = np.r_[0:17, 27:36]
# Where an expression shows, each with the points it is placed by: each eye and the mouth (outer lips) by their own
# centre, each brow by its eye's (a raised brow is a brow farther from its eye).
EXPRESSION_GROUPS = ((LEFT_EYE, LEFT_EYE), (RIGHT_EYE, RIGHT_EYE), (slice(17, 22), LEFT_EYE),
                     (slice(22, 27), RIGHT_EYE), (MOUTH, slice(48, 60)))


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks[..., LEFT_EYE, :].mean(-2), landmarks[..., RIGHT_EYE, :].mean(-2)


def interocular(landmarks: np.ndarray) -> float:
    left, right = eye_centres(landmarks)
    return float(np.linalg.norm(right - left))


def ffhq_quad(landmarks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The oriented square FFHQ was cropped with (Karras et al. 2019; NVlabs ffhq-dataset ``recreate_aligned_images``):
    corners (4, 2) top-left, bottom-left, bottom-right, top-right in photo pixels. The eyes and the mouth corners fix
    its centre and angle, its side is 4x the eye distance or 3.6x the eye-to-mouth distance, whichever is larger
    (times ``scale``)."""
    left, right = eye_centres(landmarks)
    eye_avg = (left + right) / 2
    mouth_avg = (landmarks[48] + landmarks[54]) / 2
    eye_to_eye, eye_to_mouth = right - left, mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * scale
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def frame_matrix(landmarks: np.ndarray, size: int, scale: float = 1.0) -> np.ndarray:
    """2x3 similarity taking photo pixels to the ``size`` square frame cut by ``ffhq_quad``.

    As NVlabs' PIL quad transform: the quad's corners are the frame's outer pixel edges, so with pixel centres at
    whole coordinates (dlib's landmarks, kornia's warps) they land on (-0.5, -0.5) ... (size - 0.5, size - 0.5).
    """
    top_left, bottom_left, _, top_right = ffhq_quad(landmarks, scale)
    x_axis, y_axis = top_right - top_left, bottom_left - top_left
    s = size / np.hypot(*x_axis)
    rot = np.stack([x_axis, y_axis]) / np.hypot(*x_axis)  # rows: the frame's x and y axes (image y points down)
    return np.concatenate([s * rot, (-s * rot @ top_left - 0.5)[:, None]], axis=1)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_to_frame(image: torch.Tensor, matrix: np.ndarray, size: int, padding: str = "zeros") -> torch.Tensor:
    """Resample a (B, C, H, W) photo into the frame; outside the photo is 0 (``padding="reflection"``: the photo
    mirrored at its edges, as FFHQ's crop pads it)."""
    m = torch.as_tensor(matrix, dtype=image.dtype, device=image.device)[None].expand(image.shape[0], 2, 3)
    return warp_affine(image, m, (size, size), mode="bilinear", padding_mode=padding, align_corners=True)


def warp_photo_to_frame(photo: torch.Tensor, matrix: np.ndarray, size: int) -> torch.Tensor:
    """(B, C + 1, S, S): the photo in the frame, plus a last channel that is 1 where the frame lies inside it."""
    return warp_to_frame(torch.cat([photo, torch.ones_like(photo[:, :1])], 1), matrix, size)


def warp_from_frame(frame: torch.Tensor, matrix: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Inverse of ``warp_to_frame``: put a frame back into photo coordinates (outside the frame is 0)."""
    m = torch.as_tensor(matrix, dtype=frame.dtype, device=frame.device)[None]
    return warp_affine(frame, invert_affine_transform(m).expand(frame.shape[0], 2, 3), (height, width),
                       mode="bilinear", padding_mode="zeros", align_corners=True)


def _border_anchors(size: int, per_side: int = 4) -> np.ndarray:
    t = np.linspace(0, size - 1, per_side + 1)[:-1]
    e = size - 1
    return np.concatenate([np.stack([t, 0 * t], 1), np.stack([e + 0 * t, t], 1),
                           np.stack([e - t, e + 0 * t], 1), np.stack([0 * t, e - t], 1)])


def tps_warp(images: torch.Tensor, points_from: np.ndarray, points_to: np.ndarray) -> torch.Tensor:
    """Warp (B, C, S, S) frames so that landmarks ``points_from`` (B, N, 2) land on ``points_to`` ((B,) N, 2).

    The frame border is pinned so the spline stays tame away from the face. Only ``TPS_POINTS`` drive it.
    """
    b, _, size, _ = images.shape
    points_from, points_to = points_from[:, TPS_POINTS], points_to[..., TPS_POINTS, :]
    anchors = np.broadcast_to(_border_anchors(size), (b, 4 * 4, 2))
    src = np.concatenate([points_from, anchors], axis=1)
    dst = np.concatenate([np.broadcast_to(points_to, points_from.shape), anchors], axis=1)

    def normalised(p):  # grid_sample frame with align_corners=False
        return torch.as_tensor((2 * p + 1) / size - 1, dtype=images.dtype, device=images.device)

    src_n, dst_n = normalised(src), normalised(dst)
    # The warp samples each output pixel at the spline of its place, so the spline maps dst onto src, and its kernels
    # sit on its first argument, dst. (With src as the centres, 5-px moves landed 4 px off on average, 11 px at most.)
    with warnings.catch_warnings():  # kornia 0.9's notice on every call, about the centres passed here rightly
        warnings.simplefilter("ignore", FutureWarning)
        kernel_weights, affine_weights = get_tps_transform(dst_n, src_n)
    return warp_image_tps(images, dst_n, kernel_weights, affine_weights)


def shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Landmark-shape difference after the best similarity fit of b onto a (Umeyama: rotation, no reflection), in
    units of a's eye distance.

    Small when two faces have the same head pose and expression.
    """
    return float(np.linalg.norm(similarity_fit(b, a)(b) - a, axis=1).mean() / interocular(a))


# Each eye's and the inner mouth's upper and lower points, facing each other across the opening.
OPENINGS = (((37, 38), (41, 40)), ((43, 44), (47, 46)), ((61, 62, 63), (67, 66, 65)))


def openings(landmarks: np.ndarray) -> np.ndarray:
    """How far the left eye, the right eye and the mouth are open (3,): the mean gap between their facing upper and
    lower points, in eye distances."""
    eye = interocular(landmarks)
    return np.array([np.linalg.norm(landmarks[list(upper)] - landmarks[list(lower)], axis=1).mean() / eye
                     for upper, lower in OPENINGS])


def opening_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean difference between two faces' openings of the eyes and the mouth (eye distances): the part of an
    expression that no warp of the photo makes, since a closed eye or mouth has nothing inside to stretch open."""
    return float(np.abs(openings(a) - openings(b)).mean())


def similarity_fit(moving: np.ndarray, fixed: np.ndarray) -> SimilarityTransform:
    """The best similarity (Umeyama: rotation, no reflection) taking the points ``moving`` onto ``fixed``."""
    fit = SimilarityTransform.from_estimate(moving, fixed)
    if not isinstance(fit, SimilarityTransform):  # a FailedEstimation, which says why
        raise ValueError(f"no similarity fit between the landmark sets: {fit}")
    return fit


def with_expression(landmarks: np.ndarray, source: np.ndarray, strength: float) -> np.ndarray:
    """``landmarks`` (..., 68, 2) whose eyes, brows and mouth are moved by ``strength`` (0..1) towards the shapes the
    ``source``'s (68, 2) have, placed on each face itself: the source's face fitted onto it by a similarity on the
    jaw line and nose, then each eye and the mouth centred on its own centre and each brow on its eye's. The jaw line
    and nose stay: the face's shape is its own, its expression the source's."""
    out = np.array(landmarks, dtype=np.float64)
    for face in out.reshape(-1, *out.shape[-2:]):  # views: each face is changed in place
        moved, goal = similarity_fit(source[FACE_SHAPE], face[FACE_SHAPE])(source), face.copy()
        for group, anchor in EXPRESSION_GROUPS:
            goal[group] = moved[group] + face[anchor].mean(0) - moved[anchor].mean(0)
        face += strength * (goal - face)
    return out
