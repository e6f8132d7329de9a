"""Index tables into MediaPipe's 478-point face mesh (468 surface points + 10 iris points with refine_landmarks).

"Right"/"left" are the subject's, as in MediaPipe: the right eye is on the image's left, like iBUG points 36-41.
Contours are ordered walks of MediaPipe's own edge sets (mediapipe/python/solutions/face_mesh_connections.py).
"""

from __future__ import annotations

import numpy as np

N_POINTS = 478

# Closed loop, clockwise in the image from the forehead top (FACEMESH_FACE_OVAL).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# Lower part of the face oval, ear to ear through the chin (152), image left to right.
JAW = FACE_OVAL[FACE_OVAL.index(356):FACE_OVAL.index(127) + 1][::-1]
# Nose midline from between the eyes to the tip (1), and the nose's lower edge wing to wing through 2 (FACEMESH_NOSE).
NOSE_BRIDGE = [168, 6, 197, 195, 5, 4, 1]
NOSE_BOTTOM = [48, 64, 98, 97, 2, 326, 327, 294, 278]
# Lips, each from the right mouth corner (image left) to the left one (FACEMESH_LIPS).
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
# Lid margins, each from the corner on the image's left to the one on its right (FACEMESH_RIGHT_EYE/LEFT_EYE).
RIGHT_EYE_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
RIGHT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
LEFT_EYE_UPPER = [362, 398, 384, 385, 386, 387, 388, 466, 263]
LEFT_EYE_LOWER = [362, 382, 381, 380, 374, 373, 390, 249, 263]
# Iris centre then four rim points (refine_landmarks; FACEMESH_RIGHT_IRIS/LEFT_IRIS).
RIGHT_IRIS = [468, 469, 470, 471, 472]
LEFT_IRIS = [473, 474, 475, 476, 477]
# Brow upper and lower edges, from the image's left to its right (FACEMESH_RIGHT_EYEBROW/LEFT_EYEBROW).
RIGHT_BROW_UPPER = [70, 63, 105, 66, 107]
RIGHT_BROW_LOWER = [46, 53, 52, 65, 55]
LEFT_BROW_UPPER = [336, 296, 334, 293, 300]
LEFT_BROW_LOWER = [285, 295, 282, 283, 276]


# iBUG point k = mean of its anchors; an anchor is a fractional position along a contour (2.5: halfway between its
# 3rd and 4th points). Started from the index table of github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, then each
# position was fitted (0.25 steps, left/right pairs tied) to dlib's 68 points on the 45 shared identity/makeup photos.
# Mean error / eye distance, leave-one-identity-out (table -> fitted): jaw 0.087 -> 0.056, brows 0.067 -> 0.041,
# nose 0.041 -> 0.027, eyes 0.029 -> 0.022, mouth 0.030 -> 0.024. Brows follow the upper edge, inner ends the middle.
IBUG_ANCHORS: list[list[tuple[list[int], float]]] = (
    [[(JAW, s)] for s in (0, 1.25, 2.5, 3.5, 4.75, 6, 7.75, 9.5, 11, 12.5, 14.25, 16, 17.25, 18.5, 19.5, 20.75, 22)]
    + [[(RIGHT_BROW_UPPER, s)] for s in (0, 1.25, 2.5, 3.25)] + [[(RIGHT_BROW_UPPER, 4), (RIGHT_BROW_LOWER, 4)]]
    + [[(LEFT_BROW_UPPER, 0), (LEFT_BROW_LOWER, 0)]] + [[(LEFT_BROW_UPPER, s)] for s in (0.75, 1.5, 2.75, 4)]
    + [[(NOSE_BRIDGE, s)] for s in (0.25, 1.75, 3.5, 5)] + [[(NOSE_BOTTOM, s)] for s in (2.5, 3.25, 4, 4.75, 5.5)]
    + [[(RIGHT_EYE_UPPER, s)] for s in (0, 3.5, 5.25, 7.5)] + [[(RIGHT_EYE_LOWER, s)] for s in (4.75, 3)]
    + [[(LEFT_EYE_UPPER, s)] for s in (0.5, 2.75, 4.5, 8)] + [[(LEFT_EYE_LOWER, s)] for s in (5, 3.25)]
    + [[(LIPS_OUTER_UPPER, s)] for s in (0, 2.75, 4, 5, 6, 7.25, 10)]
    + [[(LIPS_OUTER_LOWER, s)] for s in (7.5, 6, 5, 4, 2.5)]
    + [[(LIPS_INNER_UPPER, s)] for s in (0.5, 3.75, 5, 6.25, 9.5)]
    + [[(LIPS_INNER_LOWER, s)] for s in (6.25, 5, 3.75)]
)


def _ibug_weights() -> np.ndarray:
    weights = np.zeros((68, N_POINTS))
    for k, anchors in enumerate(IBUG_ANCHORS):
        for contour, position in anchors:
            i = min(int(position), len(contour) - 2)
            weights[k, contour[i]] += (1 - (position - i)) / len(anchors)
            weights[k, contour[i + 1]] += (position - i) / len(anchors)
    return weights


IBUG_WEIGHTS = _ibug_weights()  # (68, 478): iBUG points as fixed linear combinations of mesh points


def ibug68(dense: np.ndarray) -> np.ndarray:
    """The 68 iBUG points (68, 2) from a (478, 2 or 3) mesh."""
    if dense.ndim != 2 or dense.shape[0] != N_POINTS or dense.shape[1] < 2:
        raise ValueError(f"expected a ({N_POINTS}, 2 or 3) mesh, got {dense.shape}")
    return IBUG_WEIGHTS @ dense[:, :2]
