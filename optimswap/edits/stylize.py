"""Example-based face stylization from one portrait exemplar (FaceBlit, Texler et al. 2021; StyleBlit, Sýkora et
al. 2019; Fišer et al. 2017), with the person kept.

Guides as FaceBlit builds them: a positional guide (each pixel's position in the exemplar's frame, a thin-plate
spline from the exemplar's landmarks to the photo's) and an appearance guide (grey minus blurred grey, the photo's
histogram-matched to the exemplar's). ``preview`` is StyleBlit's guided chunk copying with 3x3 voting, no
optimization; ``optimize`` starts from it and runs the restricted CNNMRF patch loss with the exemplar as the only
target (search window = positional guide, appearance guide in the search cost), a Gram loss to the warped exemplar
over the edited region (Gatys et al. 2016), a weak content loss, and an identity term (deeper features on eyes,
brows, nose and mouth, plus the face's low-frequency shading).

By default (region ``portrait``) the frame is the whole photo: the head is guided as above, the body beyond the
exemplar's sitter and the background are quilted (Efros and Freeman 2001) from the exemplar's clothes and backdrop
(both sitters found by MediaPipe's selfie segmentation), only ever from inside the exemplar's picture; the
background is kept as the preview's copy while the person is optimized.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.geometry.conversions import normalize_pixel_coordinates
from kornia.geometry.transform import warp_affine
from scipy.interpolate import RBFInterpolator
from scipy.ndimage import distance_transform_edt, median_filter
from scipy.spatial import ConvexHull
from skimage.exposure import match_histograms

from optimswap.compose import gaussian_blur
from optimswap.config import EditConfig, option
from optimswap.errors import OptionError
from optimswap.eval.metrics import histogram_distance
from optimswap.face import Face, face_mask, find_face, frame_matrix, interocular, warp_from_frame, warp_to_frame
from optimswap.face.align import JAW, NOSE_BRIDGE, NOSE_WINGS, TPS_POINTS, apply_matrix
from optimswap.face.detect import import_mediapipe, mediapipe_process
from optimswap.face.mask import face_polygon, grow, polygon_mask, soften
from optimswap.face.regions import OUTER_LIPS, brows_mask, eyes_mask, skin_mask, union
from optimswap.features import LAYER_STRIDE, load_encoder
from optimswap.io import to_tensor
from optimswap.losses import ContentLoss, GramLoss, LuminanceLoss, PatchStyleLoss, TVLoss, gram_matrix
from optimswap.losses.luminance import low_luminance, luminance_loss
from optimswap.objective import Objective, Term
from optimswap.optim import pool_to, resize_to
from optimswap.pipeline import EditResult, Frame, Level, Plan, editable_mask, make_frame
from optimswap.registry import Edit, Input, Photo, Scoring, Setup, load_photo, register, run_edit

log = logging.getLogger(__name__)
METHODS = ("optimize", "preview")
# A painted or drawn exemplar's skin carries its medium's fine texture (brush, canvas, strokes); photographed skin is
# smooth at the face's scale, and stylize then has no medium to carry but smears the photo. Mean grey-level
# residual of a 3x3 median on the skin in a 256-px frame: the 5 shared exemplars 4.9-7.9, 17 photographs
# (identities, makeup, lfw) 0.25-2.3; a warning below the middle of the gap.
MEDIUM_TEXTURE_SIZE, PHOTOGRAPH_TEXTURE = 256, 3.5
REGIONS = ("portrait", "head", "face")
# An exemplar whose backdrop (MediaPipe person share < 0.05) is under this share of its picture has too little of it
# to quilt the portrait's background from (the illustration, 05: 0.18; the other four exemplars 0.30-0.36).
BACKDROP_SHARE = 0.25
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")  # Gatys et al. 2016's style layers (up to relu4_1)


@dataclass(frozen=True)
class StylizeConfig(EditConfig):
    size: int = option(512, "Working frame side in pixels (portrait: the whole photo's longer side; head, face: "
                                "the face crop).", low=32, high=4096)
    # The whole head (hair included) must fit the frame: 1.5 x the FFHQ crop.
    frame_scale: float = option(1.5, "Face crop side = 4 x eye distance x this (FFHQ alignment rule, Karras et al. "
                                     "2019); head and face regions only.", low=0.25, high=4.0)
    levels: int = option(2, "Pyramid levels (coarse to fine, halving the side).", low=1, high=6)
    iters: int = option(15, "Optimizer iterations per pyramid level.", low=1, high=100_000)
    # A charcoal drawing has no colour, but the feature losses, blind to small chroma shifts, tinted light clothes lilac
    # (jennifer's and mark's chests); mapping the person's chroma onto the exemplar's, lightness untouched, removes
    # such tints without touching the drawing's values.
    exemplar_chroma: bool = option(True, "Portrait: map the person's chroma (CIELAB a and b histograms) onto the "
                                         "exemplar's over the same area, lightness kept.")
    # The exemplar's colours are the point of the edit.
    color_match_result: bool = option(False, "Colour-match the optimized face to the photo's before compositing.")
    method: str = option("optimize", "optimize (patch loss from the preview), or preview (guided patch copying "
                                     "only, StyleBlit).", choices=METHODS)
    # A drawn head on a sharp photograph reads as face paint: the default frame is the whole photo, person and
    # background both in the medium.
    region: str = option("portrait", "What takes the exemplar's medium: portrait (the whole photo: person in its "
                                     "strokes, background in its backdrop), head (face and hair, the rest kept) or "
                                     "face.", choices=REGIONS)
    # Border blend of the head region: wider than the face mask's, so the medium fades into the photo.
    border_feather: float = option(0.03, "Feather sigma of the head region (frame fraction).", low=0, high=0.2)
    appearance_sigma: float = option(0.02, "Appearance guide: blur sigma of grey - blur(grey) (frame fraction).",
                                     low=0, high=0.2, above=True)
    appearance_weight: float = option(1.0, "Share of the appearance guide in the patch search cost, against the "
                                           "features' (0 = position only).", low=0)
    # Preview (StyleBlit): chunks of exemplar pixels copied whole; within each, the offset around the positional
    # guide's answer that best fits the appearance guide. Chunks of 8 px searched within 10 px pasted the
    # exemplar's own eyes, brows and hairline onto the photo (FaceBlit's failure); smaller chunks searched wider
    # follow the photo's structure. 5 exemplars x 3 photos at 512: dlib distance to the photo 0.583 -> 0.492
    # (<= 0.55: 4 -> 13 of 15), Gram distance to the exemplar 0.38 -> 0.50 of the photo's.
    chunk: float = option(0.008, "Preview: chunk side (frame fraction; 4 px at 512).", low=0, high=0.25, above=True)
    chunk_search: float = option(0.04, "Preview: appearance search radius around the positional guide (frame "
                                       "fraction).", low=0, high=0.25)
    style_weight: float = option(80.0, "Weight of the restricted CNNMRF patch loss (the exemplar's medium).", low=0)
    # The patch loss lets every patch find a close exemplar patch while the mix of patches stays the photo's; the
    # Gram term moves the mix. 15 pairs at 512, Gram distance to the exemplar over the person as a share of the
    # photo's: 0.49-0.76 (halved on 1) without it, 0.33-0.64 (halved on 10) at 300; 0.46-0.63 at 30 on 5 pairs.
    # dlib distance to the photo (evaluation only): mean 0.495 -> 0.491, <= 0.55 on 11 -> 12.
    gram_weight: float = option(300.0, "Weight of the Gram loss to the warped exemplar over the edited region "
                                       "(the exemplar's mix of strokes and colours).", low=0)
    search_window: float = option(0.05, "Patch search window around the positional guide (frame fraction).", low=0,
                                  high=1)
    search_max_cells: int = option(4, "Cap of the search window in feature cells.", low=1, high=64)
    search_energy: float = option(0.98, "Share of the exemplar features' energy the patch search keeps.", low=0,
                                  high=1, above=True)
    content_layer: str = option("relu4_2", "Encoder layer of the content loss.")
    content_weight: float = option(2.0, "Weight of the content loss (weak: strokes must come through).", low=0)
    # The shape of eyes and mouth lives in finer features than relu4_1 reads: on tony_blair's 80-px face the
    # watercolour exemplar's round, outlined eyes replaced his. 15 pairs at 512, dlib to the photo (evaluation only)
    # at relu4_1 / 30 -> relu3_1 / 60: mean 0.479 -> 0.455, tony_blair x watercolour 0.588 -> 0.530, <= 0.55 on 13
    # -> 14; Gram distance to the exemplar unchanged (halved on 15); weight 100 did not move the remaining miss.
    identity_layer: str = option("relu3_1", "Encoder layer of the identity term on eyes, brows, nose and mouth.")
    identity_weight: float = option(60.0, "Weight of the identity terms (features of eyes, brows, nose, mouth; "
                                         "low-frequency shading of the face).", low=0)
    luminance_ratio: float = option(1.0, "Weight of the low-frequency shading term relative to the identity weight.",
                                    low=0)
    luminance_sigma: float = option(0.012, "Blur sigma of the shading term (frame fraction).", low=0, high=0.2,
                                    above=True)
    tv_weight: float = option(1.0, "Weight of total variation of the image (low: strokes stay crisp).", low=0)

    ALIASES: ClassVar[dict[str, str]] = {"style": "style_weight", "gram": "gram_weight", "content": "content_weight",
                                         "identity": "identity_weight", "tv": "tv_weight"}

    def check(self) -> None:
        for name in ("content_layer", "identity_layer"):
            if getattr(self, name) not in LAYER_STRIDE:
                raise OptionError(name, f"unknown layer {getattr(self, name)!r}")

    def frame_matrix(self, landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
        """The portrait region works on the whole photo (``photo_frame_matrix``), the others on the face crop."""
        if self.region == "portrait":
            return photo_frame_matrix(height, width, self.size)
        return super().frame_matrix(landmarks, height, width)


PRESETS = {
    "default": StylizeConfig(),
    # Quick look / tests.
    "fast": StylizeConfig(size=256, iters=10),
}


# ---------------------------------------------------------------- regions


def photo_frame_matrix(height: int, width: int, size: int) -> np.ndarray:
    """2x3 scale and shift of the whole (``height`` x ``width``) photo into the ``size`` square, centred (the frame's
    pixel edges on the photo's, as ``frame_matrix``; a non-square photo leaves bands of the frame outside it)."""
    side = max(height, width)
    s = size / side
    return np.array([[s, 0, -s * ((width - side) / 2 - 0.5) - 0.5], [0, s, -s * ((height - side) / 2 - 0.5) - 0.5]])


def _square(matrix: np.ndarray) -> np.ndarray:
    """A 2x3 affine matrix as 3x3, to compose and invert."""
    return np.vstack([matrix, [0, 0, 1]])


def exemplar_matrix(style_landmarks: np.ndarray, photo_landmarks: np.ndarray, matrix: np.ndarray,
                    cfg: StylizeConfig) -> np.ndarray:
    """2x3 exemplar pixels -> the frame of ``matrix`` (photo pixels -> frame), placing the exemplar's face where the
    photo's face lies in that frame, at its size and tilt (FaceBlit's alignment: the strokes keep their size against
    the face). In the face crop that is the exemplar's own face crop."""
    size = cfg.size
    face = frame_matrix(style_landmarks, size, cfg.frame_scale)
    if cfg.region != "portrait":
        return face
    photo_face = frame_matrix(photo_landmarks, size, cfg.frame_scale)
    return (_square(matrix) @ np.linalg.inv(_square(photo_face)) @ _square(face))[:2]


def head_polygon(landmarks: np.ndarray) -> np.ndarray:
    """A generous head outline: the face hull with the brows raised to the top of the hair, grown sideways."""
    return grow(face_polygon(landmarks, forehead=2.6), 0.6 * interocular(landmarks))


def above_jaw(landmarks: np.ndarray, margin: float) -> np.ndarray:
    """Polygon of everything above the lower jaw (landmarks 4-12 pushed ``margin`` px outwards), level with its ends
    out to far beyond the face. Below the jaw the positional guide sends the neck onto whatever the exemplar has
    under its chin: his scarf's blue-grey at jennifer's jaw, a paper halo, a beard-like shadow."""
    jaw = grow(landmarks[JAW], margin)[4:13]
    far = 10 * interocular(landmarks)
    (left, top), right = jaw.min(0) - far, jaw[:, 0].max() + far
    return np.concatenate([[[left, top], [left, jaw[0, 1]]], jaw, [[right, jaw[-1, 1]], [right, top]]])


def stylize_region(landmarks: np.ndarray, size: int, cfg: StylizeConfig, device: Any,
                   dense: np.ndarray | None = None) -> torch.Tensor:
    """The editable mask: the face, the head outline (the background in it is kept by the person segmentation,
    see ``background_keep``) or, for the portrait, the whole frame (the photo's frame: ``background_keep`` leaves
    out what lies beyond the photo)."""
    if cfg.region == "face":
        return face_mask(landmarks, size, cfg.forehead, cfg.feather, device=device)
    if cfg.region == "portrait":
        return torch.ones(1, 1, size, size, device=device)
    sigma = max(cfg.border_feather * size, 0.5)
    head = polygon_mask(head_polygon(landmarks), size, device) * polygon_mask(above_jaw(landmarks, sigma), size,
                                                                                device)
    return soften(head, sigma)


@functools.cache
def _selfie():
    return import_mediapipe().solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)


def person_share(image: np.ndarray, device: Any = "cpu") -> torch.Tensor:
    """(1, 1, H, W) share of each pixel that is the person (MediaPipe selfie segmentation; it finds the sitter in
    the painted and drawn exemplars too)."""
    person = np.array(mediapipe_process(_selfie, np.ascontiguousarray(image)).segmentation_mask)
    return torch.as_tensor(person, dtype=torch.float32, device=device).clamp(0, 1)[None, None]


def background_keep(person: torch.Tensor, cfg: StylizeConfig) -> torch.Tensor | None:
    """The share of each photo pixel kept as it is: the background for the head region, nothing for the portrait
    (zeros, so that the frame's bands beyond the photo are not edited either), None for the face. ``person``: the
    photo's ``person_share``."""
    if cfg.region == "face":
        return None
    return 1 - person if cfg.region == "head" else torch.zeros_like(person)


def feature_mask(landmarks: np.ndarray, size: int, device: Any = "cpu") -> torch.Tensor:
    """Soft mask of what makes the person: eyes, brows, nose and mouth with a margin."""
    eye = interocular(landmarks)
    nose = np.concatenate([landmarks[NOSE_BRIDGE], landmarks[NOSE_WINGS]])
    parts = [eyes_mask(landmarks, size, 0.2 * eye, device), brows_mask(landmarks, size, 0.25 * eye, device),
             polygon_mask(grow(nose[ConvexHull(nose).vertices], 0.1 * eye), size, device),
             polygon_mask(grow(landmarks[OUTER_LIPS], 0.12 * eye), size, device)]
    return soften(union(parts), max(0.05 * eye, 0.5))


def shading_mask(landmarks: np.ndarray, editable: torch.Tensor, cfg: StylizeConfig) -> torch.Tensor:
    """Where the shading term holds the photo's low-frequency lightness: the editable face. Standardised over the
    whole head, the hair's contrast with the skin took most of the spread and the face came out flat paper (tony_blair
    x charcoal, dlib distance to the photo 0.559 -> 0.535 on the face)."""
    return face_mask(landmarks, editable.shape[-1], cfg.forehead, cfg.feather, device=editable.device) * editable


# ---------------------------------------------------------------- guides


@dataclass
class Guides:
    """FaceBlit's guides in the photo's frame (side S), and the exemplar in its own frame."""

    position: torch.Tensor  # (1, 2, S, S): each photo-frame pixel's (x, y) in the exemplar's frame
    appearance: torch.Tensor  # (1, 1, S, S): the photo's appearance guide, histogram-matched to the exemplar's
    exemplar: torch.Tensor  # (1, 3, S, S): the exemplar in its frame, nearest-neighbour (its own pixel values)
    exemplar_smooth: torch.Tensor  # the same, bilinear
    exemplar_appearance: torch.Tensor  # (1, 1, S, S): the exemplar's appearance guide in its frame
    landmarks: np.ndarray  # (68, 2): the exemplar's landmarks in its frame
    person: torch.Tensor  # (1, 1, S, S): the photo's person share in the frame (the portrait: cut at half share)
    bounds: tuple[int, int, int, int]  # (y0, y1, x0, x1): the exemplar pixels copies may read (its picture's)

    def warped(self, image: torch.Tensor) -> torch.Tensor:
        """An exemplar-frame image resampled at the positional guide: onto the photo's geometry."""
        size = image.shape[-1]
        grid = normalize_pixel_coordinates(self.position.permute(0, 2, 3, 1), size, size)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=True)

    def warped_exemplar(self) -> torch.Tensor:
        """The exemplar (bilinear) on the photo's geometry: what the style terms and distances aim at."""
        return self.warped(self.exemplar_smooth)


def position_guide(photo_landmarks: np.ndarray, style_landmarks: np.ndarray, size: int) -> np.ndarray:
    """(2, S, S) float32: each frame pixel's (x, y) in the exemplar's frame, by a thin-plate spline through the
    landmark pairs with an affine part, so that away from the face it extrapolates like FaceBlit's moving least
    squares. (The inner lips coincide on a closed mouth and would make the system singular.)"""
    spline = RBFInterpolator(photo_landmarks[TPS_POINTS], style_landmarks[TPS_POINTS], kernel="thin_plate_spline")
    ys, xs = np.mgrid[:size, :size]
    return spline(np.stack([xs.ravel(), ys.ravel()], 1)).T.reshape(2, size, size).astype(np.float32)


def appearance_guide(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Grey minus blurred grey (FaceBlit's appearance guide), (B, 1, H, W)."""
    grey = image.mean(1, keepdim=True)
    return grey - gaussian_blur(grey, sigma)


def onto_person(position: np.ndarray, exemplar_person: np.ndarray, photo_person: np.ndarray) -> np.ndarray:
    """The positional guide with every photo-person pixel that it sends onto the exemplar's background sent back
    onto the exemplar's person: mirrored across the nearest person pixel, or onto that pixel where the mirror
    lands off the person too. Where the photo's hair reaches past the exemplar's, the landmark warp alone paints
    it with the exemplar's backdrop (the poster's yellow at mark's neck, in jennifer's hair)."""
    size = exemplar_person.shape[0]
    inside = exemplar_person > 0.5
    if inside.all() or not inside.any():
        return position
    nearest = distance_transform_edt(~inside, return_indices=True)[1]  # (2 [y, x], S, S)

    def pixel(c: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(c), 0, size - 1).astype(int)

    x, y = position
    xi, yi = pixel(x), pixel(y)
    # Soft person edges too: the head region shows the result there in part (hair strands at 0.1-0.5).
    off = ~inside[yi, xi] & (photo_person > 0.1)
    ny, nx = (nearest[k][yi[off], xi[off]].astype(np.float32) for k in (0, 1))
    my, mx = 2 * ny - y[off], 2 * nx - x[off]
    lands = inside[pixel(my), pixel(mx)]
    fixed = position.copy()
    fixed[0][off] = np.where(lands, mx, nx)
    fixed[1][off] = np.where(lands, my, ny)
    return fixed


def _band_cost(exemplar: np.ndarray, ys: np.ndarray, xs: np.ndarray, placed: tuple[int, int], height: int,
               width: int) -> np.ndarray:
    """Sum of squared differences between the ``height`` x ``width`` squares of ``exemplar`` at each (ys, xs) and
    the one at ``placed`` (top-left corners)."""
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    squares = exemplar[ys[:, None, None] + rows, xs[:, None, None] + cols]
    return ((squares - exemplar[placed[0] + rows, placed[1] + cols]) ** 2).sum((1, 2, 3))


def quilt_band(tile: int) -> int:
    """Width of the band in which ``quilt`` matches a square's surroundings to its neighbours."""
    return max(1, tile // 4)


def square_anchors(source: np.ndarray, tile: int, band: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs): top-left corners of the ``tile`` squares that lie in ``source`` (S, S bools) with a ``band`` above
    and to the left of them."""
    span = tile + band
    counts = np.pad(source.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    full = counts[span:, span:] - counts[:-span, span:] - counts[span:, :-span] + counts[:-span, :-span]
    ay, ax = np.nonzero(full == span * span)
    return ay + band, ax + band


def quilt(exemplar: np.ndarray, source: np.ndarray, target: np.ndarray, tile: int, rng: np.random.Generator,
          candidates: int = 24) -> np.ndarray:
    """(2, S, S) float32 positional guide of a texture quilted from the exemplar's ``source`` pixels over the frame
    (Efros and Freeman 2001, without the cut): ``tile`` x ``tile`` squares of the source laid on a grid, each the one
    of ``candidates`` random squares whose surroundings in the exemplar best match what its left and upper
    neighbours already put there. Only the ``target`` pixels (S, S bools) are given; the rest is 0."""
    size = source.shape[0]
    band = quilt_band(tile)
    ay, ax = square_anchors(source, tile, band)
    if not len(ay):  # no square fits: single source pixels, each at random
        ay, ax = np.nonzero(source)
        tile = band = 1
    blocks = -(-size // tile)
    chosen = np.zeros((blocks, blocks, 2), dtype=int)
    for by in range(blocks):
        for bx in range(blocks):
            pick = rng.integers(len(ay), size=candidates)
            y, x = ay[pick], ax[pick]
            cost = np.zeros(candidates)
            if bx:  # the candidate's left band in the exemplar against the right band of the tile placed left of it
                ly, lx = chosen[by, bx - 1]
                cost += _band_cost(exemplar, y, x - band, (ly, lx + tile - band), tile, band)
            if by:
                uy, ux = chosen[by - 1, bx]
                cost += _band_cost(exemplar, y - band, x, (uy + tile - band, ux), band, tile)
            best = int(cost.argmin())
            chosen[by, bx] = y[best], x[best]
    pixels = np.arange(size)
    block, within = pixels // tile, pixels % tile
    position = np.zeros((2, size, size), dtype=np.float32)
    position[0] = (chosen[block][:, block, 1] + within[None, :])
    position[1] = (chosen[block][:, block, 0] + within[:, None])
    return np.where(target, position, 0).astype(np.float32)


def inner_box(inside: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): an axis-aligned box within the convex ``inside`` (S, S bools; the exemplar's picture,
    tilted with its face): its bounding box, shrunk edge by edge (the edge with most pixels outside first)."""
    ys, xs = np.nonzero(inside)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    while y0 < y1 and x0 < x1:
        outside = [(~inside[y0, x0:x1 + 1]).sum(), (~inside[y1, x0:x1 + 1]).sum(), (~inside[y0:y1 + 1, x0]).sum(),
                   (~inside[y0:y1 + 1, x1]).sum()]
        worst = int(np.argmax(outside))
        if not outside[worst]:
            break
        y0, y1, x0, x1 = (y0 + (worst == 0), y1 - (worst == 1), x0 + (worst == 2), x1 - (worst == 3))
    return int(y0), int(y1), int(x0), int(x1)


def quilt_guide(texture: np.ndarray, source: np.ndarray, target: np.ndarray, reach: float,
                rng: np.random.Generator) -> np.ndarray:
    """``quilt`` in squares the size of the searches' ``reach``, smaller where too few distinct ones fit in the
    source (around a small face the exemplar is small in the frame)."""
    tile = max(2, round(reach))
    while tile > 2 and len(square_anchors(source, tile, quilt_band(tile))[0]) < tile**2:
        tile = tile // 2
    return quilt(texture, source, target, tile, rng)


def make_guides(style: np.ndarray, style_face: Face, frame: Frame, cfg: StylizeConfig,
                person: torch.Tensor | None = None) -> Guides:
    """Exemplar in its own frame (same size and scale rule as the photo's) and the guides. ``person``: the photo's
    ``person_share`` (default: all person), where the positional guide must not reach the exemplar's background
    (``onto_person``)."""
    size, device = frame.size, frame.image.device
    photo_landmarks = apply_matrix(np.linalg.inv(_square(frame.matrix))[:2], frame.landmarks)
    matrix = exemplar_matrix(style_face.landmarks, photo_landmarks, frame.matrix, cfg)
    landmarks = apply_matrix(matrix, style_face.landmarks)
    m = torch.as_tensor(matrix, dtype=torch.float32, device=device)[None]
    photo = to_tensor(style, device)
    # Reflection beyond the exemplar's borders: its paper or paint, never black, where the frame reaches past it.
    exemplar = warp_affine(photo, m, (size, size), mode="nearest", padding_mode="reflection")
    smooth = warp_affine(photo, m, (size, size), mode="bilinear", padding_mode="reflection")
    exemplar_person = warp_affine(person_share(style, device), m, (size, size), padding_mode="reflection")[0, 0]
    photo_person = (torch.ones(1, 1, size, size, device=device) if person is None
                    else warp_to_frame(person, frame.matrix, size))
    position = position_guide(frame.landmarks, landmarks, size)
    exemplar_sitter, photo_sitter = exemplar_person.cpu().numpy(), photo_person[0, 0].cpu().numpy()
    bounds = (0, size - 1, 0, size - 1)
    if cfg.region == "portrait" and person is not None:
        # Only the exemplar's own pixels are read: beyond its picture the frame holds its mirror image, whose
        # reflected sitter the landmark warp reached around a small face (a second face below jennifer's, mark's
        # sweater drawn with chin fragments). The search offsets fold back at the picture's edges (``bounds``).
        in_picture = warp_affine(torch.ones_like(photo[:, :1]), m, (size, size))[0, 0].cpu().numpy() > 0.5
        bounds = inner_box(in_picture)
        edge_clear = distance_transform_edt(in_picture)
        photo_person = (photo_person >= 0.5).float()
        photo_sitter = photo_person[0, 0].cpu().numpy()
        texture = smooth[0].permute(1, 2, 0).cpu().numpy()
        rng = np.random.default_rng(cfg.seed)
        reach = max(cfg.chunk + cfg.chunk_search, cfg.search_window) * size
        # The person is cut at half share on both sides. Head, hair, neck and chest follow the landmark warp as far
        # as it lands on the exemplar's sitter; the rest of the body (the photo's larger below the jaw) is quilted
        # from the exemplar's clothes, the lower half of its sitter below the jaw: folded or mirrored into its
        # whole body, mark's sweater came out in pieces of the exemplar's neck and chin.
        sitter = (exemplar_sitter > 0.5) & (edge_clear > 1)
        below = polygon_mask(above_jaw(landmarks, 0), size, device)[0, 0].cpu().numpy() < 0.5
        photo_below = polygon_mask(above_jaw(frame.landmarks, 0), size, device)[0, 0].cpu().numpy() < 0.5
        rows = np.nonzero((sitter & below).any(1))[0]
        clothes = sitter & below & (np.arange(size)[:, None] >= (rows.mean() if len(rows) else 0))
        if clothes.sum() < 0.02 * sitter.sum():  # a head cut at the chin has no clothes: the sitter as a whole
            clothes = sitter
        x, y = (np.clip(np.rint(c), 0, size - 1).astype(int) for c in position)
        off_body = (photo_sitter > 0) & photo_below & ~(sitter & below)[y, x]
        position = onto_person(position, sitter.astype(np.float32), photo_sitter * ~off_body)
        position = np.where(off_body, quilt_guide(texture, clothes, off_body, reach, rng), position)
        # The background is a texture quilted from the exemplar's backdrop (its paper, canvas or painted backdrop),
        # clear of the sitter by what a chunk's search reaches, so no chunk brings its hair strands into it.
        # Stretched from the picture's box onto the exemplar's, 65-95 % of it landed on the sitter and was moved
        # to the nearest backdrop pixel: flat rays on the illustration. Where the backdrop is a small share of the
        # picture (the illustration's hair and flowers reach its edges), the squares come from everything outside
        # the exemplar's face.
        source = (exemplar_sitter < 0.05) & in_picture
        if source.sum() < BACKDROP_SHARE * in_picture.sum():
            face = polygon_mask(grow(face_polygon(landmarks, cfg.forehead), 0.3 * interocular(landmarks)), size)
            source = (face[0, 0].cpu().numpy() < 0.5) & (edge_clear > 1)
        else:
            source &= (edge_clear > 1) & (distance_transform_edt(exemplar_sitter < 0.05)
                                          > (cfg.chunk + cfg.chunk_search) * size)
        backdrop = quilt_guide(texture, source, photo_sitter == 0, reach, rng)
        position = np.where(photo_sitter > 0, position, backdrop)
        y0, y1, x0, x1 = bounds
        position = np.stack([position[0].clip(x0, x1), position[1].clip(y0, y1)]).astype(np.float32)
    else:
        position = onto_person(position, exemplar_sitter, photo_sitter)
    sigma = cfg.appearance_sigma * size
    style_app = appearance_guide(smooth, sigma)
    photo_app = appearance_guide(frame.image, sigma)
    matched = torch.as_tensor(match_histograms(photo_app[0, 0].cpu().numpy(), style_app[0, 0].cpu().numpy()),
                              dtype=torch.float32, device=device)[None, None]
    if cfg.region == "portrait":
        # The background takes the exemplar's backdrop, not the photo's scenery drawn in its strokes.
        matched = matched * photo_person
    return Guides(torch.as_tensor(position, device=device)[None], matched, exemplar, smooth, style_app, landmarks,
                  photo_person, bounds)


# ---------------------------------------------------------------- preview (StyleBlit)


def _reflect(q: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Integer coordinates folded back into [lo, hi] (mirror at its ends)."""
    period = max(2 * (hi - lo), 1)
    q = (q - lo).remainder(period)
    return lo + torch.where(q > hi - lo, period - q, q)


@torch.no_grad()
def chunk_coordinates(guides: Guides, chunk: int, radius: int, position_cost: float = 0.5) -> torch.Tensor:
    """(2, S, S) long (y, x): the exemplar-frame pixel each photo-frame pixel copies.

    The frame is cut into ``chunk`` x ``chunk`` squares; each copies a contiguous square of the exemplar, placed at
    its centre's positional guide plus the offset (within ``radius``) whose appearance guide fits the photo's best,
    with a penalty on the offset (``position_cost`` x the guide's variance at the full radius).
    """
    size = guides.position.shape[-1]
    device = guides.position.device
    blocks = -(-size // chunk)
    centres = (torch.arange(blocks, device=device) * chunk + chunk // 2).clamp(max=size - 1)
    seed = guides.position[0][:, centres][:, :, centres].round().long()  # (2 [x, y], B, B)
    seed_yx = torch.stack([seed[1], seed[0]])
    step = max(1, radius // 3)
    offsets = torch.arange(-radius, radius + 1, step, device=device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    d = torch.stack([dy.reshape(-1), dx.reshape(-1)])  # (2, D)
    u_range = torch.arange(-(chunk // 2), chunk - chunk // 2, 2, device=device)
    uy, ux = torch.meshgrid(u_range, u_range, indexing="ij")
    u = torch.stack([uy.reshape(-1), ux.reshape(-1)])  # (2, U): sample points within a chunk
    # Photo's appearance at the sample points of every chunk: (B, B, U).
    py = (centres[:, None, None] + u[0]).clamp(0, size - 1)
    px = (centres[None, :, None] + u[1]).clamp(0, size - 1)
    photo_app = guides.appearance[0, 0][py, px]
    # Exemplar's appearance at seed + d + u: (D, B, B, U).
    y0, y1, x0, x1 = guides.bounds
    qy = _reflect(seed_yx[0][None, :, :, None] + d[0][:, None, None, None] + u[0], y0, y1)
    qx = _reflect(seed_yx[1][None, :, :, None] + d[1][:, None, None, None] + u[1], x0, x1)
    style_app = guides.exemplar_appearance[0, 0][qy, qx]
    cost = ((style_app - photo_app) ** 2).mean(-1)
    cost = cost + position_cost * guides.appearance.var() * ((d.float() ** 2).sum(0) / max(radius, 1) ** 2)[:, None,
                                                                                                          None]
    best = d[:, cost.argmin(0)]  # (2, B, B)
    start = seed_yx + best
    pixels = torch.arange(size, device=device)
    block = pixels // chunk
    within = pixels - centres[block]
    ys = _reflect(start[0][block][:, block] + within[:, None], y0, y1)
    xs = _reflect(start[1][block][:, block] + within[None, :], x0, x1)
    return torch.stack([ys, xs])


def copy_pixels(exemplar: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(1, 3, S, S): the exemplar's pixel at each position's coordinates (no resampling, no mixing)."""
    return exemplar[0][:, coords[0], coords[1]][None]


def vote(exemplar: torch.Tensor, coords: torch.Tensor, bounds: tuple[int, int, int, int]) -> torch.Tensor:
    """StyleBlit's 3x3 voting: each pixel averages what its 8 neighbours' copied chunks (and its own) put there,
    which softens the seams between chunks and leaves their insides as copied; never beyond ``bounds``."""
    size = coords.shape[-1]
    padded = F.pad(coords[None].float(), (1, 1, 1, 1), mode="replicate")[0].long()
    total = torch.zeros_like(exemplar)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            nb = padded[:, 1 + oy:1 + oy + size, 1 + ox:1 + ox + size]
            total += copy_pixels(exemplar, torch.stack([_reflect(nb[0] - oy, *bounds[:2]),
                                                        _reflect(nb[1] - ox, *bounds[2:])]))
    return total / 9


def preview(guides: Guides, cfg: StylizeConfig) -> torch.Tensor:
    """StyleBlit-style stylized frame (1, 3, S, S) from the guides alone."""
    size = guides.position.shape[-1]
    coords = chunk_coordinates(guides, max(2, round(cfg.chunk * size)), round(cfg.chunk_search * size))
    return vote(guides.exemplar, coords, guides.bounds)


# ---------------------------------------------------------------- optimization


def stylize_objective(guides: Guides, frame: Frame, cfg: StylizeConfig, device: torch.device):
    """Per-level objective builder: restricted patch loss to the warped exemplar with the appearance guide in its
    search, Gram loss to it over the edited region, weak content, identity (feature content on eyes/brows/nose/mouth,
    low-frequency shading), TV."""
    encoder = load_encoder(cfg.encoder, device)
    warped = guides.warped_exemplar()
    warped_app = guides.warped(guides.exemplar_appearance)

    def build(level: Level) -> Objective:
        layers = [cfg.content_layer, cfg.identity_layer, *STYLE_LAYERS]
        landmarks = frame.landmarks * (level.size / frame.size)
        # The portrait's background stays the preview's copy of the exemplar's backdrop, which is the content there
        # (the photo's on the person), and the style terms work on the person: left to them, jennifer's flat
        # charcoal paper drifted to pink and green.
        person = resize_to(guides.person, level.size) if cfg.region == "portrait" else None
        styled = level.mask if person is None else level.mask * person
        with torch.no_grad():
            source = encoder(level.image, layers)
            target = encoder(resize_to(warped, level.size), list(STYLE_LAYERS))
            content = source[cfg.content_layer] if person is None else encoder(
                level.start + person * (level.image - level.start), [cfg.content_layer])[cfg.content_layer]
        features = feature_mask(landmarks, level.size, device)
        terms = [Term("content", cfg.content_weight, ContentLoss(content), cfg.content_layer),
                 Term("identity", cfg.identity_weight,
                      ContentLoss(source[cfg.identity_layer], pool_to(features, source[cfg.identity_layer].shape[-2:])),
                      cfg.identity_layer),
                 Term("shading", cfg.identity_weight * cfg.luminance_ratio,
                      LuminanceLoss(level.image, cfg.luminance_sigma * level.size,
                                    shading_mask(landmarks, level.mask, cfg)), None)]
        for layer in STYLE_LAYERS:
            feat = target[layer]
            shape = feat.shape[-2:]
            region = pool_to(styled, shape)
            scale = float((source[layer] ** 2).mean().clamp_min(1e-8))
            guide_q, guide_t = pool_to(resize_to(guides.appearance, level.size), shape), pool_to(
                resize_to(warped_app, level.size), shape)
            # Scaled so the guide holds appearance_weight x the features' energy per cell in the search.
            factor = float(cfg.appearance_weight * (feat**2).sum(1).mean() / (guide_t**2).mean().clamp_min(1e-12))
            radius = int(min(max(round(cfg.search_window * level.size / LAYER_STRIDE[layer]), 1),
                             cfg.search_max_cells))
            loss = PatchStyleLoss(feat, torch.ones_like(feat[:, :1]), region[0, 0], radius, scale, cfg.search_energy,
                                  (guide_q * factor**0.5, guide_t * factor**0.5))
            terms.append(Term(f"style_{layer}", cfg.style_weight, loss, layer))
            terms.append(Term(f"gram_{layer}", cfg.gram_weight, GramLoss(feat, region), layer))
        terms.append(Term("tv", cfg.tv_weight, TVLoss(), None))
        return Objective(encoder, terms)

    return build


def _style_face(style: Photo, cfg: StylizeConfig) -> Face:
    return find_face(style.image, cfg.landmarks, name=style.name)


def medium_texture(image: np.ndarray, face: Face) -> float:
    """The fine texture of ``face``'s skin (grey levels, see PHOTOGRAPH_TEXTURE)."""
    matrix = frame_matrix(face.landmarks, MEDIUM_TEXTURE_SIZE)
    grey = warp_to_frame(to_tensor(image), matrix, MEDIUM_TEXTURE_SIZE)[0].mean(0).numpy() * 255
    skin = skin_mask(apply_matrix(matrix, face.landmarks), MEDIUM_TEXTURE_SIZE)[0, 0].numpy() > 0.5
    return float(np.abs(grey - median_filter(grey, 3))[skin].mean()) if skin.any() else float("inf")


def prepare(setup: Setup) -> Plan:
    cfg, frame, device = setup.cfg, setup.frame, setup.device
    style: Photo = setup.inputs["style"]
    style_face = _style_face(style, cfg)
    texture = medium_texture(style.image, style_face)
    if texture < PHOTOGRAPH_TEXTURE:
        log.warning("the style %s looks like a photograph (skin texture %.1f grey levels, painted and drawn portraits "
                    "have 5 and more): stylize takes a painting's or drawing's medium, and a photograph's result is "
                    "smeared", style.name, texture)
    person = person_share(setup.photo, device)
    guides = make_guides(style.image, style_face, frame, cfg, person)
    quick = preview(guides, cfg)
    photo = to_tensor(setup.photo, device)
    h, w = photo.shape[-2:]
    inside = warp_from_frame(frame.mask, frame.matrix, h, w).clamp(0, 1)
    start = photo + inside * (warp_from_frame(quick, frame.matrix, h, w) - photo)
    objective = None if cfg.method == "preview" else stylize_objective(guides, frame, cfg, device)
    finish = None
    if cfg.region == "portrait":
        # The background is the preview's copy of the exemplar's backdrop, as copied: the person's style terms
        # reach into it through the encoder's receptive fields (jennifer x charcoal: the paper drifted to lilac,
        # 0.06 off the preview on average at 128 px).
        sitter = warp_from_frame(guides.person, frame.matrix, h, w) > 0.5
        reference = guides.warped_exemplar()

        def finish(out: torch.Tensor) -> torch.Tensor:
            if cfg.exemplar_chroma:
                out = match_chroma(out, sitter, reference, guides.person > 0.5)
            return out + (1 - person) * (start - out)
    return Plan(objective, start=start, keep=background_keep(person, cfg), finish=finish,
                result={"guides": guides, "preview": quick})


def match_chroma(image: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor,
                 reference_mask: torch.Tensor) -> torch.Tensor:
    """``image`` (1, 3, H, W) with the CIELAB a and b of its ``mask`` pixels histogram-matched to those of
    ``reference``'s ``reference_mask`` pixels, lightness kept."""
    lab, target = rgb_to_lab(image.clamp(0, 1)), rgb_to_lab(reference.clamp(0, 1))
    region, wanted = mask[0, 0], reference_mask[0, 0]
    if not region.any() or not wanted.any():
        return image
    levels = np.linspace(0, 1, 257)
    for channel in (1, 2):
        values = lab[0, channel][region].cpu().numpy()
        # Quantiles of every 7th pixel: as exact at 257 levels, a sixth of the time of the photo's millions.
        mapped = np.interp(values, np.quantile(values[::7], levels),
                           np.quantile(target[0, channel][wanted].cpu().numpy()[::7], levels))
        lab[0, channel][region] = torch.as_tensor(mapped, dtype=lab.dtype, device=lab.device)
    return torch.where(mask, lab_to_rgb(lab).clamp(0, 1), image)  # the rest as it was, not round-tripped


# ---------------------------------------------------------------- evaluation


def gram_matrices(image: torch.Tensor, mask: torch.Tensor, encoder: Any) -> list[torch.Tensor]:
    """Gram matrices of ``image``'s STYLE_LAYERS features over ``mask`` (frame)."""
    feats = encoder(image, list(STYLE_LAYERS))
    return [gram_matrix(feats[layer], pool_to(mask, feats[layer].shape[-2:])) for layer in STYLE_LAYERS]


def identity_proxy(image: torch.Tensor, photo: torch.Tensor, landmarks: np.ndarray, mask: torch.Tensor,
                   cfg: StylizeConfig, encoder: Any) -> float:
    """dlib-free distance to the photo's person: relative feature distance on eyes, brows, nose and mouth (the
    identity layer) plus the standardised low-frequency shading difference over the face in ``mask`` (editable)."""
    size = image.shape[-1]
    a, b = (encoder(x, [cfg.identity_layer])[cfg.identity_layer] for x in (image, photo))
    weight = pool_to(feature_mask(landmarks, size, image.device), a.shape[-2:])
    features = float((weight * (a - b) ** 2).sum() / (weight * b**2).sum().clamp_min(1e-12))
    sigma, face = cfg.luminance_sigma * size, shading_mask(landmarks, mask, cfg)
    return features + float(luminance_loss(image, low_luminance(photo, sigma, face), sigma, face))


class StyleReference:
    """The exemplar warped onto the photo's face (``exemplar``, frame), as style distances measure against it over
    ``mask`` (frame): its Gram matrices and colours, computed once for every image scored."""

    @torch.no_grad()
    def __init__(self, exemplar: torch.Tensor, mask: torch.Tensor, encoder: Any):
        self.mask, self.encoder = mask, encoder
        self.region = mask[0, 0] > 0.5
        self.grams = gram_matrices(exemplar, mask, encoder)
        self.pixels = exemplar[0].permute(1, 2, 0)[self.region]

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict[str, float]:
        """Gram distance (mean over STYLE_LAYERS of |G(image) - G(exemplar)| / |G(exemplar)|) and colour histogram
        distance (earth mover's, 0-255) of ``image`` to the exemplar."""
        grams = gram_matrices(image, self.mask, self.encoder)
        gram = np.mean([float((a - b).norm() / b.norm().clamp_min(1e-12)) for a, b in zip(grams, self.grams,
                                                                                           strict=True)])
        return {"gram": float(gram),
                "colour": histogram_distance(image[0].permute(1, 2, 0)[self.region], self.pixels)}


def style_distances(frame: Frame, cfg: StylizeConfig, photo: np.ndarray, output: np.ndarray, style: np.ndarray,
                    style_face: Face, person: torch.Tensor, encoder: Any, suffix: str = "") -> dict[str, float]:
    """Gram and colour-histogram distance to the exemplar, guided onto the photo in ``frame`` as ``cfg`` guides it,
    of the photo (``gram{suffix}_before`` ...) and the output (``*{suffix}_after``) over the pixels ``cfg``'s region
    changes (for the portrait: the whole photo)."""
    guides = make_guides(style, style_face, frame, cfg, person)
    edited = editable_mask(frame, background_keep(person, cfg))
    # The output is scored as read back from the photo into the frame; the exemplar is read the same way. The
    # Gram distance is that sensitive to resampling: the warped exemplar itself, pasted into jennifer's photo, kept
    # 0.47 of the photo's distance read against its frame copy, 0.24 against the copy read back (512 px).
    h, w = photo.shape[:2]
    exemplar = warp_to_frame(warp_from_frame(guides.warped_exemplar(), frame.matrix, h, w), frame.matrix, frame.size)
    reference = StyleReference(exemplar, edited, encoder)
    row = {}
    for when, image in (("before", photo), ("after", output)):
        for name, value in reference(warp_to_frame(to_tensor(image), frame.matrix, frame.size)).items():
            row[f"{name}{suffix}_{when}"] = value
    return row


# Levels (of 255) within which an output pixel still counts as the photograph's.
PHOTO_LEVELS = 4


def score(s: Scoring) -> dict:
    """Style distance to the exemplar (Gram on the encoder, colour histogram) of the photo (before) and the
    output (after) over the pixels the edit changes, the same over the whole photo whatever the region (as the
    portrait guides the exemplar onto it: ``*_whole``), the share of the picture outside the face still the
    photograph's (``share_of_photo``: every channel within PHOTO_LEVELS of it), and the dlib-free identity proxy of
    the output to the photo.

    With ``region`` head the edited pixels are the head outline less the background the person segmentation keeps:
    the kept background is the photo's by design (over the whole head outline even the exemplar itself pasted on
    the person stayed at 0.44-0.67 of the photo's Gram distance on mark's five pairs)."""
    style = load_photo(s.record["inputs"]["style"], "style")
    style_face = _style_face(style, s.cfg)
    person = person_share(s.source)
    encoder = load_encoder(s.cfg.encoder, "cpu")
    row: dict[str, Any] = {"style": style.name, "region": s.cfg.region}
    row |= style_distances(s.frame, s.cfg, s.source, s.output, style.image, style_face, person, encoder)
    portrait = s.cfg.replace(region="portrait")
    whole = make_frame(to_tensor(s.source), s.face, portrait, stylize_region)
    row |= style_distances(whole, portrait, s.source, s.output, style.image, style_face, person, encoder, "_whole")
    output = warp_to_frame(to_tensor(s.output), whole.matrix, whole.size)
    face = face_mask(whole.landmarks, whole.size, s.cfg.forehead, s.cfg.feather)[0, 0]
    outside = (editable_mask(whole, background_keep(person, portrait))[0, 0] > 0.5) & (face < 0.5)
    row["share_of_photo"] = float(((output - whole.image).abs().amax(1)[0] * 255 <= PHOTO_LEVELS)[outside].float()
                                  .mean())
    with torch.no_grad():
        edited = editable_mask(s.frame, background_keep(person, s.cfg))
        row["id_proxy"] = identity_proxy(s.output_frame, s.frame.image, s.frame.landmarks, edited, s.cfg, encoder)
    return row


@dataclass
class StylizeResult(EditResult):
    guides: Guides | None = None
    preview: torch.Tensor | None = None  # the StyleBlit frame the optimization started from


STYLIZE = register(Edit(
    name="stylize", summary="Paint PHOTO in the medium of the portrait STYLE (person and background), keeping the "
                            "person.",
    source="photo", inputs=(Input("style", "photo", "Painted or drawn portrait (one face) whose medium to take."),),
    presets=PRESETS, prepare=prepare, mask=stylize_region, score=score, result_type=StylizeResult))


def stylize(photo: str | os.PathLike | np.ndarray, style: str | os.PathLike | np.ndarray,
            cfg: StylizeConfig | None = None, face_index: int = 0, progress: bool = True) -> StylizeResult:
    """Give the face in ``photo`` the medium of the portrait ``style``."""
    return run_edit(STYLIZE, photo, {"style": style}, cfg, face_index, progress=progress)
