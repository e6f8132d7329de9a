"""Makeup transfer (BeautyGAN's histogram-matched makeup loss as an optimization objective, IPM-Net's degree).

The reference portrait is aligned to the plain face (similarity frame, then thin-plate spline onto the plain's
landmarks); per region (lips, eye shadow, skin) the plain's pixels are pulled to the reference's colour
histogram, while a VGG content loss keeps the person and TV on the change keeps its edges soft. Only the
regions may change; everything else is the input, bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from optimswap.config import SwapConfig
from optimswap.face import Face, find_face, frame_matrix, tps_warp
from optimswap.face.align import apply_matrix, warp_photo_to_frame
from optimswap.face.mask import soften
from optimswap.face.regions import eye_shadow_mask, lips_mask, skin_mask, union
from optimswap.features import load_encoder
from optimswap.io import read_image, to_tensor
from optimswap.losses import ContentLoss, HistogramLoss, TVLoss, region_pixels
from optimswap.objective import Objective, Term
from optimswap.optim import resize_to
from optimswap.pipeline import EditResult, Frame, Level, edit

def region_masks(landmarks: np.ndarray, size: int, cfg: SwapConfig, device) -> dict[str, torch.Tensor]:
    """Soft (1, 1, S, S) masks of the configured makeup regions for frame landmarks at ``size``."""
    make = {"lips": lambda: lips_mask(landmarks, size, device),
            "eyes": lambda: eye_shadow_mask(landmarks, size, cfg.feather, device),
            "skin": lambda: skin_mask(landmarks, size, cfg.forehead, cfg.feather, device)}
    masks = {name: make[name]() for name in cfg.makeup_regions}
    if "lips" in masks:  # lips are a hard polygon: soften like the others so no region has a hard edge
        masks["lips"] = soften(masks["lips"], max(cfg.feather * size, 0.5))
    return masks


def editable_mask(cfg: SwapConfig):
    """The pipeline's mask: union of the makeup regions."""
    def mask_fn(landmarks, size, device):
        return union(region_masks(landmarks, size, cfg, device).values())

    return mask_fn



def align_reference(reference: np.ndarray, face: Face, frame: Frame, cfg: SwapConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference photo in the plain's frame and landmark geometry, and where it is inside the photo."""
    matrix = frame_matrix(face.landmarks, cfg.size, cfg.frame_scale)
    landmarks = apply_matrix(matrix, face.landmarks)
    warped = tps_warp(warp_photo_to_frame(to_tensor(reference, device), matrix, cfg.size), landmarks[None], frame.landmarks)
    return warped[:, :3], warped[:, 3:]


def makeup_objective(reference: np.ndarray, face: Face, cfg: SwapConfig):
    def build(frame: Frame, device: torch.device):
        ref, inside = align_reference(reference, face, frame, cfg, device)
        encoder = load_encoder(cfg.encoder, device)
        weights = dict(zip(cfg.makeup_regions, cfg.makeup_region_weights))

        def level_objective(level: Level) -> Objective:
            landmarks = frame.landmarks * (level.size / frame.size)
            ref_l, inside_l = resize_to(ref, level.size), resize_to(inside, level.size)
            with torch.no_grad():
                content = encoder(level.image, [cfg.content_layer])[cfg.content_layer]
            terms = [Term("content", cfg.content_weight, ContentLoss(content), cfg.content_layer)]
            for name, region in region_masks(landmarks, level.size, cfg, device).items():
                ref_pixels, plain_pixels = region_pixels(ref_l, region, inside_l), region_pixels(level.image, region)
                if len(ref_pixels) == 0 or len(plain_pixels) == 0:
                    raise ValueError(f"the {name} region is empty at {level.size} px")
                loss = HistogramLoss(region, ref_pixels, plain_pixels, cfg.makeup_degree, cfg.makeup_color_space)
                terms.append(Term(f"makeup_{name}", cfg.makeup_weight * weights[name], loss, None))
            terms.append(Term("tv", cfg.tv_weight, TVLoss(level.image), None))
            return Objective(encoder, terms)

        return level_objective

    return build


@dataclass
class MakeupResult(EditResult):
    reference_face: Face | None = None
    source_face: Face | None = None


def makeup(plain: str | os.PathLike, reference: str | os.PathLike, cfg: SwapConfig, face_index: int = 0,
           progress: bool = True) -> MakeupResult:
    """Apply the makeup of the portrait ``reference`` to the face in ``plain``."""
    photo = read_image(plain)
    face = find_face(photo, cfg.landmarks, face_index, name=str(plain))
    ref_photo = read_image(reference)
    ref_face = find_face(ref_photo, cfg.landmarks, name=str(reference))
    result = edit(photo, face, cfg, makeup_objective(ref_photo, ref_face, cfg), progress, editable_mask(cfg))
    return MakeupResult(**vars(result), reference_face=ref_face, source_face=face)
