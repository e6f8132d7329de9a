"""Facial hair and glasses, found from appearance in the aligned frame; the landmarks only say where to look.

Facial hair (beard, moustache, stubble) grows below the nose and inside the jaw line. Three zones there (the upper
lip, the chin, the jaw's sides) are compared with the same face's cheeks under the eyes: a zone is hair where its
median is both darker and more textured (fine detail) than the cheeks'. Shading darkens a clean lower face too,
but smoothly; single pixels are too noisy on a 100-px face, so the decision is the zone's. Inside a hairy zone the
hair is every pixel unlike the cheeks: darker, of another colour (grey, white, bluish stubble) or textured.

Glasses are told by their bridge: a thin line spanning the nose bridge between the eyes, which no face has (row
means across the bridge cancel skin texture and single hairs). Their frames are the strong ridges of the eye band.
(Right on 85 of 95 shared photos: it misses faint rimless bridges and fires on a crease between the brows; see
docs/swap.md.)

Where a bearded target's beard ends on a clean-shaven source's jaw, ``beard_ending`` weighs the source photo in.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import sato

from optimswap.face.align import (
    JAW,
    LEFT_EYE,
    RIGHT_EYE,
    apply_matrix,
    frame_matrix,
    interocular,
    warp_from_frame,
    warp_to_frame,
)
from optimswap.face.detect import Face
from optimswap.face.mask import polygon_mask, soften
from optimswap.face.occlusion import colour_values, own_features
from optimswap.io import to_tensor

FRAME_SIDE = 256  # working frame side (4 eye distances wide): the detectors' scales are set in eye distances
JAW_MARGIN = 0.08  # facial hair is looked for this many eye distances inside the jaw line
# Zone medians against the cheeks (log intensity; fine detail as a multiple of the cheeks'). On the shared photos,
# upper lip: 7 of 8 bearded and 7 of 8 moustached faces 0.51-1.26 darker with texture 1.5-3.1, clean faces at most
# 0.36 darker or texture 1.1 when darker; chin: bearded 0.33-0.95 / 1.5-2.1, clean faces darker only smoothly.
MOUSTACHE_DARKER = 0.45
BEARD_DARKER = 0.3
TEXTURED = 1.4
PIXEL_DARKER = 0.15  # in a hairy zone, hair is what is this much darker than the cheeks ...
OTHER_COLOUR = 3.0  # ... or this far from their chromaticity (Mahalanobis), or textured
HAIR_SPECKLE = 0.02  # flagged pieces thinner than 2x this (eye distances) are dropped ...
HAIR_CLOSING = 0.05  # ... and gaps up to 2x this closed
GLASSES_LINE = 0.175  # glasses: a line across the nose bridge of this contrast (log intensity) or more
RIDGE_SIGMAS = (0.025, 0.05)  # line widths the ridge filter looks for (eye distances)
FRAME_LINES = 0.5  # frame pixels: ridge at least this share of the lines found on the bridge and the rims
FEATHER = 1.5  # soft edge of the returned masks, photo pixels


def _frame(photo: np.ndarray, face: Face) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) photo, got {photo.dtype} {photo.shape}")
    if face.landmarks.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {face.landmarks.shape}")
    matrix = frame_matrix(face.landmarks, FRAME_SIDE)
    return warp_to_frame(to_tensor(photo), matrix, FRAME_SIDE), apply_matrix(matrix, face.landmarks), matrix


def _to_photo(found: np.ndarray, matrix: np.ndarray, photo: np.ndarray, face: Face) -> np.ndarray:
    """A frame bool mask as a soft (H, W) float32 photo mask."""
    upsampling = FRAME_SIDE / (4 * interocular(face.landmarks))
    soft = soften(torch.as_tensor(found, dtype=torch.float32)[None, None], max(0.5, FEATHER * upsampling))
    return warp_from_frame(soft, matrix, *photo.shape[:2])[0, 0].clamp(0, 1).numpy()


def beard_region(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool: where facial hair grows, from the landmarks (frame pixels): below the line from the jaw's top
    points to the nose's base, down to ``JAW_MARGIN`` eye distances inside the jaw line (where no background or
    collar is seen); lips and nostrils left out."""
    eye_distance = interocular(landmarks)
    jaw = landmarks[JAW][1:16]
    centre = landmarks[33]
    moved = jaw - JAW_MARGIN * eye_distance * (jaw - centre) / np.linalg.norm(jaw - centre, axis=1, keepdims=True)
    region = polygon_mask(np.concatenate([moved, landmarks[[35, 34, 33, 32, 31]]]), size)[0, 0].numpy() > 0
    _, features = own_features(landmarks, size, eye_distance)
    return region & ~features


def upper_skin(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool: the cheeks under the eyes, above the nose's base and beside the nose, where no beard grows and
    no hair falls."""
    eye_distance = interocular(landmarks)
    rows, cols = np.mgrid[0:size, 0:size]
    lids = landmarks[[40, 41, 46, 47], 1].max()
    band = (rows > lids + 0.15 * eye_distance) & (rows < landmarks[33, 1])
    left = (cols > landmarks[36, 0]) & (cols < landmarks[31, 0] - 0.1 * eye_distance)
    right = (cols < landmarks[45, 0]) & (cols > landmarks[35, 0] + 0.1 * eye_distance)
    return band & (left | right)


def hair_zones(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, S) bool zones of ``beard_region``: the moustache's (between the nose's base and the upper lip), the
    chin's (below the lower lip, between the mouth corners) and the jaw's sides (beside the mouth)."""
    region = beard_region(landmarks, size)
    rows, cols = np.mgrid[0:size, 0:size]
    upper_lip = polygon_mask(np.concatenate([landmarks[[31, 32, 33, 34, 35]], landmarks[54:47:-1]]), size)
    moustache = region & (upper_lip[0, 0].numpy() > 0)
    between = (cols > landmarks[48, 0]) & (cols < landmarks[54, 0])
    return moustache, region & (rows > landmarks[57, 1]) & between, region & ~between


def hair_in_frame(frame: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
    """(S, S) bool in the aligned frame (landmarks in frame pixels): the facial hair, empty on a clean face.

    Shading darkens a clean lower face too (a shaded side, the chin's underside: up to ~0.5 log units on the shared
    photos), but smoothly: a zone is hair where it is both darker than the cheeks and more textured than them (its
    medians; single pixels are too noisy on a 100-px face). A beard's sides count only with its chin, so a
    shaded cheek alone is no beard."""
    size = frame.shape[-1]
    eye_distance = interocular(landmarks)
    values = colour_values(frame[0].permute(1, 2, 0).cpu().numpy())
    skin = upper_skin(landmarks, size)
    intensity = values[..., 2]
    darker = np.median(intensity[skin]) - intensity  # log units: shading and spread on a small photo vary too much
    chroma = values[..., :2] - np.median(values[skin][:, :2], 0)
    cov = np.cov(chroma[skin].T) + 0.004**2 * np.eye(2)  # floor: a grey photo has no chroma spread
    colour = np.sqrt(np.einsum("hwi,ij,hwj->hw", chroma, np.linalg.inv(cov), chroma))
    detail = np.abs(intensity - ndimage.gaussian_filter(intensity, 0.02 * eye_distance))
    texture = ndimage.gaussian_filter(detail, 0.04 * eye_distance)
    texture = texture / max(float(np.median(texture[skin])), 1e-6)
    moustache, chin, sides = hair_zones(landmarks, size)

    def hairy(zone: np.ndarray, dark: float, textured: float) -> bool:
        return bool(zone.any()) and np.median(darker[zone]) > dark and np.median(texture[zone]) > textured

    zones = np.zeros_like(moustache)
    if hairy(moustache, MOUSTACHE_DARKER, TEXTURED):
        zones |= moustache
    if hairy(chin, BEARD_DARKER, TEXTURED):
        zones |= chin
        # a side is beard where it is as dark as a beard and textured: else it is as likely the cheek's shading
        zones |= sides & ndimage.binary_opening((darker > BEARD_DARKER) & (texture > 1),
                                                iterations=max(1, round(HAIR_SPECKLE * eye_distance)))
    hair = zones & hairy_pixels(darker, colour, texture, eye_distance)
    return ndimage.binary_closing(hair, iterations=max(1, round(HAIR_CLOSING * eye_distance))) & zones


def hairy_pixels(darker: np.ndarray, colour: np.ndarray, texture: np.ndarray, eye_distance: float) -> np.ndarray:
    """(S, S) bool: pixels unlike the cheeks in any way (a beard's grey or white hairs are lighter, not darker)."""
    unlike = (darker > PIXEL_DARKER) | (colour > OTHER_COLOUR) | (texture > TEXTURED)
    return ndimage.binary_opening(unlike, iterations=max(1, round(HAIR_SPECKLE * eye_distance)))


def facial_hair_mask(photo: np.ndarray, face: Face) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 1 on the face's beard, moustache or stubble; all 0 on a clean-shaven face."""
    frame, landmarks, matrix = _frame(photo, face)
    return _to_photo(hair_in_frame(frame, landmarks), matrix, photo, face)


def eye_band(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool: where glasses sit: boxes around both eyes out to the temples, joined over the nose bridge."""
    eye_distance = interocular(landmarks)
    eyes = np.concatenate([landmarks[LEFT_EYE], landmarks[RIGHT_EYE]])
    x0, x1 = eyes[:, 0].min() - 0.35 * eye_distance, eyes[:, 0].max() + 0.35 * eye_distance
    y0, y1 = eyes[:, 1].min() - 0.3 * eye_distance, eyes[:, 1].max() + 0.35 * eye_distance
    rows, cols = np.mgrid[0:size, 0:size]
    return (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)


def _ridges(frame: torch.Tensor, eye_distance: float) -> np.ndarray:
    """(S, S) ridge strength of thin dark and bright lines in the frame's log intensity."""
    intensity = colour_values(frame[0].permute(1, 2, 0).cpu().numpy())[..., 2]
    sigmas = [max(0.7, s * eye_distance) for s in RIDGE_SIGMAS]
    return np.maximum(sato(intensity, sigmas, black_ridges=True), sato(intensity, sigmas, black_ridges=False))


def bridge_line(frame: torch.Tensor, landmarks: np.ndarray) -> float:
    """Contrast (log intensity) of the strongest thin horizontal line across the nose bridge, between the inner eye
    corners and from the bridge's top (landmark 27) to below the eyes (28): a glasses' bridge. Averaged along rows
    over the bridge's width, skin texture and single hairs cancel and a line that spans the bridge stands out."""
    eye_distance = interocular(landmarks)
    intensity = ndimage.gaussian_filter(colour_values(frame[0].permute(1, 2, 0).cpu().numpy())[..., 2],
                                        0.01 * eye_distance)
    left, right = round(landmarks[39, 0] + 0.12 * eye_distance), round(landmarks[42, 0] - 0.12 * eye_distance)
    profile = intensity[:, left:max(right, left + 1)].mean(1)
    line = np.abs(profile - ndimage.gaussian_filter1d(profile, 0.08 * eye_distance))
    top, bottom = round(landmarks[27, 1] - 0.05 * eye_distance), round(landmarks[28, 1] + 0.05 * eye_distance)
    return float(line[max(top, 0):max(bottom, top + 1)].max())


def glasses_in_frame(frame: torch.Tensor, landmarks: np.ndarray) -> tuple[float, np.ndarray]:
    """Glasses score (``bridge_line`` over ``GLASSES_LINE``; > 1: glasses) and the (S, S) bool frame pixels of the
    eye band (its strong ridges), in the aligned frame."""
    size = frame.shape[-1]
    eye_distance = interocular(landmarks)
    ridge = _ridges(frame, eye_distance)
    band = eye_band(landmarks, size)
    rows, cols = np.mgrid[0:size, 0:size]
    # the bridge and the lower rims (a strip under each eye): per column their strongest line
    bridge = ((cols > landmarks[39, 0] + 0.1 * eye_distance) & (cols < landmarks[42, 0] - 0.1 * eye_distance)
              & (rows > landmarks[27, 1] - 0.25 * eye_distance) & (rows < landmarks[29, 1]))
    lids = np.concatenate([landmarks[[40, 41]], landmarks[[46, 47]]])[:, 1].max()
    under = band & (rows > lids + 0.12 * eye_distance) & ~bridge
    strongest = min(np.median(np.where(zone, ridge, 0).max(0)[zone.any(0)]) for zone in (bridge, under))
    _, features = own_features(landmarks, size, eye_distance)
    return bridge_line(frame, landmarks) / GLASSES_LINE, band & ~features & (ridge > FRAME_LINES * strongest)


def glasses(photo: np.ndarray, face: Face) -> tuple[bool, np.ndarray, np.ndarray]:
    """Whether the face wears glasses, the (H, W) float32 frames (thin lines of the eye band, the eyes themselves
    left out; all 0 without glasses) and the (H, W) float32 eye band where they sit."""
    frame, landmarks, matrix = _frame(photo, face)
    score, lines = glasses_in_frame(frame, landmarks)
    worn = score > 1
    frames = lines if worn else np.zeros_like(lines)
    return worn, _to_photo(frames, matrix, photo, face), _to_photo(eye_band(landmarks, FRAME_SIDE), matrix, photo,
                                                                     face)


def beard_ending(mask: torch.Tensor, landmarks: np.ndarray, width: float) -> torch.Tensor:
    """(1, 1, S, S) weight in [0, 1] of the source photo where a target's beard ends, below the nose's base: 1 from
    the lower border of the face ``mask`` (1, 1, S, S; landmarks in its pixels) to half ``width`` eye distances
    inside it, falling smoothly to 0 at ``width``. A beard thins out towards the jaw and neck; patches of a target's
    beard end at the mask's border with the target's own jaw edge, a hard dark outline just inside the border."""
    if mask.ndim != 4 or mask.shape[:2] != (1, 1):
        raise ValueError(f"expected a (1, 1, S, S) mask, got {tuple(mask.shape)}")
    size = mask.shape[-1]
    eye_distance = interocular(landmarks)
    depth = ndimage.distance_transform_edt(mask[0, 0].cpu().numpy() > 0.5) / (width * eye_distance)
    ramp = np.clip(2 - 2 * depth, 0, 1)
    rows = np.arange(size, dtype=np.float64)[:, None]
    below_nose = np.clip((rows - landmarks[33, 1]) / (0.2 * eye_distance), 0, 1)  # no fade at the cheeks' sides
    weight = ramp * ramp * (3 - 2 * ramp) * below_nose
    return torch.as_tensor(weight, dtype=mask.dtype, device=mask.device)[None, None]
