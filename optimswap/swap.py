"""Face swap (Korshunova et al. 2017 as an optimization): content to the source, restricted CNNMRF patches
from all warped photos of the target person, the source's lighting, total variation."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from optimswap.compose import match_color
from optimswap.config import SwapConfig
from optimswap.face import Face, face_mask, find_face, frame_matrix, shape_distance, tps_warp
from optimswap.face.align import apply_matrix, warp_photo_to_frame
from optimswap.features import LAYER_STRIDE, load_encoder
from optimswap.io import ImageError, read_image, to_tensor
from optimswap.lighting.net import load_lighting_net
from optimswap.lighting.relight import FaceGeometry, transfer_lighting
from optimswap.losses import ContentLoss, LightingLoss, PatchStyleLoss, TVLoss
from optimswap.objective import Objective, Term
from optimswap.optim import pool_to, resize_to
from optimswap.pipeline import EditResult, Frame, Level, edit

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(target: str | os.PathLike | list) -> list[Path]:
    """A folder's images (sorted) or an explicit list of files."""
    if isinstance(target, (list, tuple)):
        paths = [Path(p) for p in target]
    else:
        folder = Path(target)
        if not folder.is_dir():
            raise ImageError(f"{folder}: target must be a folder of photos of one person")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{target}: no target photos found")
    return paths


@dataclass
class TargetSet:
    """Target photos warped into the source's frame and landmark geometry."""

    images: torch.Tensor  # (K, 3, S, S), colour-matched to the source face if configured
    valid: torch.Tensor  # (K, 1, S, S): inside the photo and inside that photo's own face mask
    used: list[dict]  # path + shape distance, best first
    skipped: list[dict]  # path + reason


def prepare_targets(paths: list[Path], source: Frame, cfg: SwapConfig, device: torch.device) -> TargetSet:
    """Detect, align, rank by landmark-shape distance to the source, keep the ``n_targets`` best, TPS-warp them."""
    candidates, skipped = [], []
    for path in paths:
        try:
            photo = read_image(path)
            face = find_face(photo, cfg.landmarks, name=str(path))
        except ImageError as err:
            log.warning("skipping target %s", err)
            skipped.append({"path": str(path), "reason": str(err)})
            continue
        matrix = frame_matrix(face.landmarks, cfg.size, cfg.frame_scale)
        landmarks = apply_matrix(matrix, face.landmarks)
        candidates.append((shape_distance(source.landmarks, landmarks), path, photo, matrix, landmarks))
    if not candidates:
        raise ImageError("no usable target photo (no face found in any)")
    candidates.sort(key=lambda c: c[0])
    chosen = candidates[: cfg.n_targets]
    if cfg.relight_targets:
        source_light = FaceGeometry.fit(source.image, source.landmarks).light
    framed, lms = [], []
    for _, _, photo, matrix, landmarks in chosen:
        photo_inside = warp_photo_to_frame(to_tensor(photo, device), matrix, cfg.size)
        image = photo_inside[:, :3]
        if cfg.relight_targets:
            image = transfer_lighting(FaceGeometry.fit(image, landmarks), source_light)
        own_mask = face_mask(landmarks, cfg.size, cfg.forehead, cfg.feather, device=device)
        framed.append(torch.cat([image, photo_inside[:, 3:] * own_mask], 1))
        lms.append(landmarks)
    lms = np.stack(lms)
    goal = lms + cfg.warp_strength * (source.landmarks - lms)
    warped = tps_warp(torch.cat(framed), lms, goal)  # one TPS solve for the photos and their validity
    images, valid = warped[:, :3], warped[:, 3:].clamp(0, 1)
    if cfg.color_match_targets:
        region = valid * source.mask
        images = match_color(images, source.image, region, source.mask)
    used = [{"path": str(c[1]), "shape_distance": round(c[0], 4)} for c in chosen]
    return TargetSet(images, valid, used, skipped)


def search_radius(cfg: SwapConfig, size: int, layer: str) -> int:
    """Landmark-restriction window in feature cells at this level."""
    cells = round(cfg.search_window * size / LAYER_STRIDE[layer])
    return int(min(max(cells, 1), cfg.search_max_cells))


def pasted_targets(images: torch.Tensor, valid: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Mean of the warped target photos where they are valid, the source elsewhere (the "paste" baseline)."""
    total = valid.sum(0, keepdim=True)
    mean = (images * valid).sum(0, keepdim=True) / total.clamp_min(1e-6)
    return torch.where(total > 1e-3, mean, source)


def swap_objective(targets: TargetSet, cfg: SwapConfig, device: torch.device):
    """Per-level objective builder for ``cfg.method`` (see SwapConfig.method)."""
    if cfg.method == "paste":
        def build_paste(level: Level) -> Objective:
            goal = pasted_targets(resize_to(targets.images, level.size), resize_to(targets.valid, level.size), level.image)
            return Objective(None, [Term("paste", 1.0, ContentLoss(goal), None)])

        return build_paste

    encoder = load_encoder(cfg.encoder, device)

    def build(level: Level) -> Objective:
        with torch.no_grad():
            source_feats = encoder(level.image, [cfg.content_layer, *cfg.style_layers])
            target_feats = encoder(resize_to(targets.images, level.size), list(cfg.style_layers))
        valid = resize_to(targets.valid, level.size)
        terms = [Term("content", cfg.content_weight, ContentLoss(source_feats[cfg.content_layer]), cfg.content_layer)]
        for layer, layer_weight in zip(cfg.style_layers, cfg.style_layer_weights):
            feat = target_feats[layer]
            shape = feat.shape[-2:]
            scale = float((source_feats[layer] ** 2).mean().clamp_min(1e-8))
            radius = None if cfg.method == "global" else search_radius(cfg, level.size, layer)
            loss = PatchStyleLoss(feat, pool_to(valid, shape), pool_to(level.mask, shape)[0, 0], radius, scale,
                                  cfg.search_energy)
            terms.append(Term(f"style_{layer}", cfg.style_weight * layer_weight, loss, layer))
        if cfg.lighting_weight:
            terms.append(Term("lighting", cfg.lighting_weight, LightingLoss(load_lighting_net(device), level.image), None))
        terms.append(Term("tv", cfg.tv_weight, TVLoss(), None))
        return Objective(encoder, terms)

    return build


@dataclass
class SwapResult(EditResult):
    targets: TargetSet | None = None
    source_face: Face | None = None


def swap(source: str | os.PathLike | np.ndarray, target: str | os.PathLike | list, cfg: SwapConfig,
         face_index: int = 0, progress: bool = True) -> SwapResult:
    """Put the identity of the person in ``target`` (folder or list of photos) onto the face in ``source``."""
    photo = read_image(source) if not isinstance(source, np.ndarray) else source
    face = find_face(photo, cfg.landmarks, face_index, name=str(source) if not isinstance(source, np.ndarray) else "source")
    paths = list_images(target)
    holder = {}

    def build(frame: Frame, device: torch.device):
        holder["targets"] = prepare_targets(paths, frame, cfg, device)
        return swap_objective(holder["targets"], cfg, device)

    result = edit(photo, face, cfg, build, progress)
    return SwapResult(**vars(result), targets=holder["targets"], source_face=face)
