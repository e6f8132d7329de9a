"""Occlusion mask: pixels inside the face outline that are not the face's own skin or features (hair strands, a hand,
glasses frames, a microphone ...), to be kept from the source photo.

Landmarks do not see occluders, so the mask comes from appearance, worked out in the aligned frame. A skin model
seeded on the inner face (chromaticity, which shading leaves alone, and log intensity; robust, refitted as a smooth
field over the face) flags pixels unlike skin, outside the face's own non-skin parts (eyes, brows, lips, nostrils).
Of those, textured ones are hair and blobs with a sharp edge are objects; smooth, soft-edged departures are shadows
or blush and stay skin. Morphology drops speckle and fills small holes; only blobs that come in across the outline or
are large stay. MediaPipe's hand landmarks add the convex hull of any hand.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import ConvexHull

from optimswap.face.align import NOSE_WINGS, apply_matrix, frame_matrix, interocular, warp_from_frame, warp_to_frame
from optimswap.face.detect import Face, import_mediapipe, mediapipe_process
from optimswap.face.mask import face_polygon, grow, polygon_mask, soften
from optimswap.face.regions import OUTER_LIPS, brows_mask, eyes_mask, union
from optimswap.io import to_tensor

FRAME_MIN, FRAME_MAX = 256, 384  # working frame side; the frame is 4 eye distances wide
SKIN_SHRINK = 0.35  # skin samples: face outline shrunk by this many eye distances, features cut out
SKIN_CLIP = 3.0  # refits of the skin model use the face pixels within this distance of it
COLOUR_THRESHOLD = 5.0  # chromaticity distance from the skin model beyond which a pixel is not skin
BRIGHTNESS_THRESHOLD = 5.0  # ... and brightness distance (log-intensity residual / its robust spread)
TEXTURE_THRESHOLD = 3.0  # such pixels are hair where fine detail is this many times the skin's median ...
EDGE_RATIO, EDGE_STEP = 2.5, 0.8  # ... or objects where their blob's edge is sharp (see sharp_blobs), judged on
EDGE_BAND = 3.0  # strips this many photo pixels wide either side of it
SKIN_MODELS = ("median", "plane", "quadratic", "quadratic")  # refits, see skin_distances
CHROMA_FLOOR = 0.005  # spread floors: chromaticity (r, g) ...
BRIGHTNESS_FLOOR = 0.05  # ... and log intensity
CHI2_MEDIAN_2D = 1.386  # median of a chi-square variable with 2 degrees of freedom
BROW_BAND = 0.3  # brows are left out as bands this many eye distances thick
SPECKLE = 0.03  # occluders thinner than 2x this many eye distances are dropped as speckle
MAX_HOLE = 0.05  # holes in the mask up to this many squared eye distances are filled (never over the features)
MIN_BLOB = 0.15  # blobs smaller than this (squared eye distances) are dropped unless they come in across the
MIN_DEPTH = 0.1  # outline and reach this many eye distances into the face (slivers along the outline are dropped)
STRAND_BAND = 0.25  # with outline_strands: texture this many eye distances inside the outline is kept however thin ...
MIN_STRAND = 0.02  # ... once joined up, in pieces of at least this many squared eye distances
HAND_MARGIN = 0.1  # hand hulls are grown by this many eye distances
FEATHER = 1.5  # soft edge in photo pixels


def occlusion_mask(photo: np.ndarray, face: Face, hands: bool = True, outline_strands: bool = False) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 1 where a pixel inside the face outline occludes the face and must be kept.

    ``outline_strands``: also flag thin hair strands along the outline, which are otherwise dropped as slivers (on a
    photo to edit, a sliver there is as likely a misplaced outline). For target photos, where flagging too much only
    costs a few patches while a strand missed is pasted onto the source's cheek."""
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) photo, got {photo.dtype} {photo.shape}")
    if face.landmarks.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {face.landmarks.shape}")
    height, width = photo.shape[:2]
    eye_distance = interocular(face.landmarks)
    size = int(np.clip(4 * eye_distance, FRAME_MIN, FRAME_MAX))
    matrix = frame_matrix(face.landmarks, size)
    landmarks = apply_matrix(matrix, face.landmarks)
    upsampling = size / (4 * eye_distance)
    occluded = appearance_occlusion(warp_to_frame(to_tensor(photo), matrix, size), landmarks, upsampling,
                                    outline_strands)
    if hands:
        occluded |= hands_occlusion(photo, matrix, size, interocular(landmarks))
    outline = _bool(polygon_mask(face_polygon(landmarks), size))
    sigma = max(0.5, FEATHER * upsampling)
    # Occluders cut by the outline run on for two feather widths, so the soft edge stays >= 0.5 up to the outline.
    occluded &= outline
    occluded |= _dilate(occluded, 2 * sigma) & ~outline
    soft = soften(torch.as_tensor(occluded, dtype=torch.float32)[None, None], sigma)
    return warp_from_frame(soft, matrix, height, width)[0, 0].clamp(0, 1).numpy()


def appearance_occlusion(frame: torch.Tensor, landmarks: np.ndarray, upsampling: float = 1.0,
                         outline_strands: bool = False) -> np.ndarray:
    """(S, S) bool in the aligned frame: pixels unlike the skin, outside the face's own features, that are textured
    (hair) or belong to a sharp-edged blob (an object), cleaned up. Smooth, soft-edged departures from the skin
    model (shadows, blush) are left alone. ``upsampling``: frame pixels per photo pixel (edges are that much wider).
    ``outline_strands``: see occlusion_mask."""
    size = frame.shape[-1]
    eye_distance = interocular(landmarks)
    brows, features = own_features(landmarks, size, eye_distance)
    outline = _bool(polygon_mask(face_polygon(landmarks), size))
    skin = _bool(polygon_mask(grow(face_polygon(landmarks), -SKIN_SHRINK * eye_distance), size)) & ~features
    values = colour_values(frame[0].permute(1, 2, 0).numpy())
    colour, brightness = skin_distances(values, landmarks, skin, outline & ~features)
    distance = np.maximum(colour / COLOUR_THRESHOLD, brightness / BRIGHTNESS_THRESHOLD)
    unlike = (distance > 1) & outline & ~features
    textured = (fine_texture(values[..., 2], skin, eye_distance) > TEXTURE_THRESHOLD) & ~features
    hair = unlike & textured
    interior = _erode(outline, 3) & ~_dilate(features, 2)  # blob edges here are real, not cuts by the outline
    objects = sharp_blobs(unlike, distance, values[..., 2], interior, eye_distance, EDGE_BAND * max(1.0, upsampling))
    occluded = clean(hair | objects, outline, brows, features, eye_distance)
    if outline_strands:
        occluded |= strands_along(textured, outline, eye_distance)
    return occluded


def colour_values(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3): linear-RGB chromaticity r, g (unchanged by shading) and log intensity of an sRGB image in [0, 1]."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clip(0, 1) + 0.055) / 1.055) ** 2.4) + 1e-3
    total = linear.sum(-1)
    return np.concatenate([linear[..., :2] / total[..., None], np.log(total)[..., None]], -1)


def fine_texture(log_intensity: np.ndarray, skin: np.ndarray, eye_distance: float) -> np.ndarray:
    """Local strength of fine detail (strands, edges; not soft shading), relative to its median over ``skin``."""
    detail = np.abs(log_intensity - ndimage.gaussian_filter(log_intensity, 0.02 * eye_distance))
    texture = ndimage.gaussian_filter(detail, 0.04 * eye_distance)
    return texture / np.median(texture[skin])


def sharp_blobs(unlike: np.ndarray, distance: np.ndarray, log_intensity: np.ndarray, interior: np.ndarray,
                eye_distance: float, band: float) -> np.ndarray:
    """The blobs of ``unlike`` with a sharp edge inside the face, i.e. objects: just inside the edge the skin distance
    is ``EDGE_RATIO`` times that just outside, or the brightness steps by ``EDGE_STEP``. Into a shadow or blush the
    distance rises gradually, so it is barely past the threshold inside and barely below it outside. ``band``: the
    width in pixels of the strips compared on either side."""
    r = SPECKLE * eye_distance
    blobs = _dilate(_erode(unlike, r), r)
    labels, count = ndimage.label(blobs)
    if count == 0:
        return blobs
    gap, (rows, cols) = ndimage.distance_transform_edt(~blobs, return_indices=True)
    outside = labels[rows, cols] * ((gap <= band) & ~blobs & interior)  # labelled by the nearest blob
    inside = labels * (blobs & ~_erode(blobs, band) & interior)
    index = np.arange(1, count + 1)

    def medians(values, strips):  # per blob; ndimage.median answers garbage for a label with no pixels
        found = np.bincount(strips.ravel(), minlength=count + 1)[1:] > 0
        return np.where(found, np.asarray(ndimage.median(values, strips, index)), np.nan)

    distance_in, distance_out = medians(distance, inside), medians(distance, outside)
    step = np.abs(medians(log_intensity, inside) - medians(log_intensity, outside))
    sharp = (distance_in > EDGE_RATIO * distance_out) | (step > EDGE_STEP)  # False where a blob has no edge inside
    return np.concatenate([[False], sharp])[labels]


def skin_distances(values: np.ndarray, landmarks: np.ndarray, seeds: np.ndarray,
                   candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every pixel's ``colour_values`` from a model of the face's skin: (chromaticity Mahalanobis
    distance, |log-intensity residual| / its robust spread), both (S, S).

    The model's expected colour starts as the median of the ``seeds`` (inner face) and becomes a plane, then a
    quadratic over the face, each fitted to the ``candidates`` (whole face minus features) the previous one explains
    (sigma clipping): it follows soft shading and the face's colour drift from cheeks to temples.
    """
    size = values.shape[0]
    eye_distance = interocular(landmarks)
    v, u = (np.mgrid[0:size, 0:size] - landmarks[27:36].mean(0)[::-1, None, None]) / eye_distance
    basis = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], -1)
    used = seeds
    for round_, model in enumerate(SKIN_MODELS):
        if used.sum() < 50:
            raise ValueError(f"too few skin pixels ({used.sum()}) to model the face's colour")
        if model == "median":  # robust to an occluder over the inner face
            expected = np.median(values[used], axis=0)
        else:
            terms = {"plane": 3, "quadratic": 6}[model]
            expected = basis[..., :terms] @ np.linalg.lstsq(basis[used][:, :terms], values[used], rcond=None)[0]
        colour, brightness = _scaled_distances(values - expected, used)
        used = (seeds if round_ == 0 else candidates) & (colour < SKIN_CLIP) & (brightness < SKIN_CLIP)
    return colour, brightness


def _scaled_distances(residual: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chromaticity Mahalanobis and brightness distances of (S, S, 3) residuals, scaled on the ``used`` pixels by
    medians (robust to occluders still among them), with floors so evenly lit, even skin does not make every small
    change an outlier."""
    chroma = residual[..., :2]
    cov = np.cov(chroma[used].T)
    # pinv: a greyscale photo has no chroma spread at all; the floor below then sets the scale
    squared = np.einsum("hwi,ij,hwj->hw", chroma, np.linalg.pinv(cov), chroma)
    cov = cov * np.median(squared[used]) / CHI2_MEDIAN_2D + CHROMA_FLOOR**2 * np.eye(2)
    colour = np.sqrt(np.einsum("hwi,ij,hwj->hw", chroma, np.linalg.inv(cov), chroma))
    spread = np.hypot(1.4826 * np.median(np.abs(residual[..., 2][used])), BRIGHTNESS_FLOOR)
    return colour, np.abs(residual[..., 2]) / spread


def own_features(landmarks: np.ndarray, size: int, eye_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) bool masks of the brows, and of all the face's own non-skin parts: eyes, brows, lips and nostrils,
    with margins for lashes, brow hair and lip edges."""
    brows = _bool(brows_mask(landmarks, size, BROW_BAND * eye_distance))
    nostrils = np.concatenate([landmarks[NOSE_WINGS], landmarks[[35, 31]] - [0, 0.15 * eye_distance]])
    others = [eyes_mask(landmarks, size, 0.12 * eye_distance),
              polygon_mask(grow(landmarks[OUTER_LIPS], 0.08 * eye_distance), size),
              polygon_mask(grow(nostrils, 0.05 * eye_distance), size)]
    return brows, brows | _bool(union(others))


def clean(raw: np.ndarray, outline: np.ndarray, brows: np.ndarray, features: np.ndarray,
          eye_distance: float) -> np.ndarray:
    """Drop speckle, join strands, fill small holes, bridge occluders across the brows; keep the blobs that come in
    across the outline or are large."""
    r = SPECKLE * eye_distance
    mask = _dilate(_erode(raw, r), r)
    mask = _erode(_dilate(mask, 2 * r), 2 * r) & outline
    holes = ndimage.binary_fill_holes(mask) & ~mask & ~features
    labels, count = ndimage.label(holes)
    small = np.bincount(labels.ravel(), minlength=count + 1) < MAX_HOLE * eye_distance**2
    mask |= small[labels] & holes
    # Hair crossing a brow is cut in two by the brow band; a closing restricted to the brows joins the pieces
    # (outside the outline counts as occluded here: it is unknown, and hair often crosses the brow's outer end).
    bridge = BROW_BAND / 2 * eye_distance
    mask |= _erode(_dilate(mask | ~outline, bridge), bridge) & brows & outline
    labels, count = ndimage.label(mask)
    area = np.bincount(labels.ravel(), minlength=count + 1)
    depth = np.zeros(count + 1)  # how far each blob reaches into the face from the outline
    np.maximum.at(depth, labels.ravel(), ndimage.distance_transform_edt(np.pad(outline, 1))[1:-1, 1:-1].ravel())
    touches = np.zeros(count + 1, bool)
    touches[np.unique(labels[outline & ~_erode(outline, 2 * r)])] = True
    keep = (touches & (depth >= MIN_DEPTH * eye_distance)) | (area >= MIN_BLOB * eye_distance**2)
    keep[0] = False
    return keep[labels]


def strands_along(textured: np.ndarray, outline: np.ndarray, eye_distance: float) -> np.ndarray:
    """The ``textured`` pixels within ``STRAND_BAND`` of the outline, joined along the strands (a closing), in pieces
    of at least ``MIN_STRAND``: strands beside the cheeks, too thin for ``clean``'s speckle opening and, blond, often
    too close to the skin's colour to be unlike it. Sharp face edges just inside the outline come too."""
    band = outline & ~_erode(outline, STRAND_BAND * eye_distance)
    r = 2 * SPECKLE * eye_distance
    strands = _erode(_dilate(textured & band, r), r) & band
    labels, count = ndimage.label(strands)
    big = np.bincount(labels.ravel(), minlength=count + 1) >= MIN_STRAND * eye_distance**2
    big[0] = False
    return big[labels]


def hands_occlusion(photo: np.ndarray, matrix: np.ndarray, size: int, eye_distance: float) -> np.ndarray:
    """(S, S) bool in the frame given by ``matrix``: the convex hull of every hand MediaPipe finds in the photo, grown
    by ``HAND_MARGIN`` x the eye distance (in frame pixels)."""
    result = mediapipe_process(_hands, photo)
    height, width = photo.shape[:2]
    mask = torch.zeros(1, 1, size, size)
    for hand in result.multi_hand_landmarks or []:
        points = apply_matrix(matrix, np.array([[p.x * width, p.y * height] for p in hand.landmark]))
        hull = points[ConvexHull(points).vertices]
        mask = torch.maximum(mask, polygon_mask(grow(hull, HAND_MARGIN * eye_distance), size))
    return mask[0, 0].numpy() > 0


@functools.cache
def _hands():
    return import_mediapipe().solutions.hands.Hands(static_image_mode=True, max_num_hands=2)


def _bool(mask: torch.Tensor) -> np.ndarray:
    return mask[0, 0].numpy() > 0.5


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    if not mask.any():  # the transform needs a zero somewhere
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= radius


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] > radius
