"""Face swap (Korshunova et al. 2017 as an optimization): content to the source, restricted CNNMRF patches
from all warped photos of the target person, the source's lighting, total variation."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from optimswap.compose import match_color
from optimswap.config import EditConfig, option
from optimswap.errors import ImageError, OptionError
from optimswap.eval.identity import identity_mean, identity_sets
from optimswap.eval.metrics import head_pose, identity_distance, landmark_nme, lighting_error, nearest_identity
from optimswap.face import face_descriptor, face_mask, find_face, frame_matrix, shape_distance, tps_warp
from optimswap.face.align import apply_matrix, warp_photo_to_frame
from optimswap.face.regions import skin_mask
from optimswap.features import LAYER_STRIDE, load_encoder
from optimswap.io import read_image, to_tensor
from optimswap.lighting.net import load_lighting_net
from optimswap.lighting.relight import FaceGeometry, transfer_lighting
from optimswap.losses import ContentLoss, LightingLoss, PatchStyleLoss, TVLoss
from optimswap.objective import Objective, Term
from optimswap.optim import pool_to, resize_to
from optimswap.pipeline import EditResult, Frame, Level, Plan
from optimswap.registry import Edit, Input, Scoring, Setup, register, run_edit

log = logging.getLogger(__name__)
METHODS = ("full", "paste", "global")


@dataclass(frozen=True)
class SwapConfig(EditConfig):
    # What is optimized (issue #3 baselines, so that a reader sees what the losses buy):
    # "full" = the objective below; "paste" = pixel loss to the mean of the target photos TPS-warped onto the
    # source's landmarks (what an image editor does; Korshunova et al.'s comparison); "global" = CNNMRF as
    # published (Li & Wand 2016): unrestricted patch search over one target photo on relu3_1 + relu4_1.
    method: str = option("full", "full, or a baseline: paste (warped mean of the targets), global (CNNMRF search).",
                         choices=METHODS)
    # Content: Gatys et al. 2016 / Korshunova et al. 2017 use relu4_2.
    content_layer: str = option("relu4_2", "Encoder layer of the content loss.")
    content_weight: float = option(1.0, "Weight of the content loss (keeps the source's pose and expression).", low=0)
    # Patch (CNNMRF) style: Li & Wand 2016 use relu3_1 + relu4_1; relu1_1 + relu2_1 are added because on the
    # edge-trained HED features colour is otherwise under-constrained (coloured hatching; ../shared/notes/
    # calibration.md, measured again in the issue #2 note).
    style_layers: tuple[str, ...] = option(("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
                                           "Encoder layers of the patch loss, joined by '+'.")
    style_layer_weights: tuple[float, ...] = option((), "Per-layer patch-loss weights joined by '+' (empty = all 1).",
                                                    low=0)
    style_weight: float = option(80.0, "Weight of the restricted CNNMRF patch loss (target identity).", low=0)
    # tuned on ../shared/faces (issue #2 note): 40 moved identity ~0.13, 80 ~0.17
    # Landmark restriction: a target patch is a candidate only within this distance of the same facial
    # location, as a fraction of the frame side, capped in feature cells to bound the search cost.
    search_window: float = option(0.06, "Patch search window around the same facial location (frame fraction).",
                                  low=0, high=1)
    search_max_cells: int = option(3, "Cap of the search window in feature cells.", low=1, high=64)
    # The nearest-neighbour search runs on the principal components keeping this share of the target features'
    # second moment (1.0 = all channels, exact). Measured on jennifer->angelina at 256 px: 0.98 keeps
    # 10/37/83/142 of 64/128/256/512 channels and cuts a re-matching from 2.9 s to ~0.5 s (bench/iteration_cost.py).
    search_energy: float = option(0.98, "Share of the target features' energy the patch search keeps.", low=0,
                                  high=1, above=True)
    # Lighting (Korshunova et al. 2017): distance to the source in the lighting network's embedding, in units of
    # its same/different threshold (optimswap/lighting; trained by `optimswap train-lighting`).
    # bench/lighting_case.py, 256 px, without re-shaded targets: lighting error 0.32 -> 0.24 and 0.28 -> 0.22 at
    # 0 -> 30, identity transfer not lower; with them the effect is small and mixed (10 and 100 no better).
    lighting_weight: float = option(30.0, "Weight of the lighting loss (keeps the source's lighting; 0 = off).", low=0)
    # L1 TV (Mahendran & Vedaldi 2015); tuned in the issue #2 note: lower leaves colour speckle on skin.
    tv_weight: float = option(8.0, "Weight of total variation of the image.", low=0)
    # How far the target photos are thin-plate-spline warped towards the source's landmarks (1 = fully).
    # A full warp also imposes the source's face shape on the targets and removes much of their identity
    # (measured: warped angelina photos sit ~0.65 from her mean descriptor vs ~0.36 unwarped); the windowed
    # search absorbs the remaining misalignment. Measured at 256 px: 0 -> id drop 0.16, 0.3 -> 0.13, same NME.
    warp_strength: float = option(0.0, "TPS warp of the target photos to the source's landmarks (0..1).", low=0,
                                  high=1)
    n_targets: int = option(8, "Use the N target photos whose landmark shape is closest to the source's.", low=1,
                            high=1000)  # Korshunova et al. pick the best-matching target photos by pose
    # Mean/std colour transfer of the targets to the source face (../shared/notes/calibration.md: keeps the
    # source's skin tone and lighting).
    color_match_targets: bool = option(True, "Colour-match the target photos to the source face before matching.")
    # Re-shade each target photo to the source's lighting before matching (ratio image on the landmark-fitted
    # face geometry, optimswap/lighting/relight.py): with a side-lit source, front-lit target patches otherwise
    # fill the shaded side with dark hair/brow patches (seen on deepface_id29 relit from the side -> jennifer).
    relight_targets: bool = option(True, "Re-shade the target photos to the source's lighting before matching.")

    ALIASES: ClassVar[dict[str, str]] = {
        "style": "style_weight", "tv": "tv_weight", "lighting": "lighting_weight", "content": "content_weight",
        "warp": "warp_strength", "targets": "n_targets", "energy": "search_energy", "layers": "style_layers"}

    def check(self) -> None:
        if self.style_layer_weights and len(self.style_layer_weights) != len(self.style_layers):
            raise OptionError("style_layer_weights", f"{len(self.style_layer_weights)} weights for "
                                                     f"{len(self.style_layers)} style layers")
        if not self.style_layers:
            raise OptionError("style_layers", "at least one layer is needed")

    def implied_by(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return METHOD_DEFAULTS.get(overrides.get("method", self.method), {})

    @property
    def layer_weights(self) -> tuple[float, ...]:
        return self.style_layer_weights or (1.0,) * len(self.style_layers)


# What each method changes in a preset; explicit options still win over these.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {},
    # A paste needs the target's face on the source's landmarks; both baselines stay as published (no lighting).
    "paste": {"warp_strength": 1.0, "levels": 1, "relight_targets": False},
    "global": {"n_targets": 1, "style_layers": ("relu3_1", "relu4_1"), "lighting_weight": 0.0,
               "relight_targets": False},
}

PRESETS = {
    "default": SwapConfig(),
    # Quick look / tests: 64 -> 128 px, the calibration setting of ../shared/notes/calibration.md.
    "fast": SwapConfig(size=128, iters=40),
    "quality": SwapConfig(size=384, levels=3, iters=60),
}


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
    stacked = np.stack(lms)
    goal = stacked + cfg.warp_strength * (source.landmarks - stacked)
    warped = tps_warp(torch.cat(framed), stacked, goal)  # one TPS solve for the photos and their validity
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
            goal = pasted_targets(resize_to(targets.images, level.size), resize_to(targets.valid, level.size),
                                  level.image)
            return Objective(None, [Term("paste", 1.0, ContentLoss(goal), None)])

        return build_paste

    encoder = load_encoder(cfg.encoder, device)

    def build(level: Level) -> Objective:
        with torch.no_grad():
            source_feats = encoder(level.image, [cfg.content_layer, *cfg.style_layers])
            target_feats = encoder(resize_to(targets.images, level.size), list(cfg.style_layers))
        valid = resize_to(targets.valid, level.size)
        terms = [Term("content", cfg.content_weight, ContentLoss(source_feats[cfg.content_layer]), cfg.content_layer)]
        for layer, layer_weight in zip(cfg.style_layers, cfg.layer_weights, strict=True):
            feat = target_feats[layer]
            shape = feat.shape[-2:]
            scale = float((source_feats[layer] ** 2).mean().clamp_min(1e-8))
            radius = None if cfg.method == "global" else search_radius(cfg, level.size, layer)
            loss = PatchStyleLoss(feat, pool_to(valid, shape), pool_to(level.mask, shape)[0, 0], radius, scale,
                                  cfg.search_energy)
            terms.append(Term(f"style_{layer}", cfg.style_weight * layer_weight, loss, layer))
        if cfg.lighting_weight:
            terms.append(Term("lighting", cfg.lighting_weight, LightingLoss(load_lighting_net(device), level.image),
                              None))
        terms.append(Term("tv", cfg.tv_weight, TVLoss(), None))
        return Objective(encoder, terms)

    return build


def prepare(setup: Setup) -> Plan:
    targets = prepare_targets(setup.inputs["target"], setup.frame, setup.cfg, setup.device)
    return Plan(swap_objective(targets, setup.cfg, setup.device),
                record={"targets_used": targets.used, "targets_skipped": targets.skipped},
                result={"targets": targets})


def score(s: Scoring) -> dict:
    """Identity moved to the target set (dlib descriptor distance to its mean, retrieval among the identity folders
    beside it), pose and expression kept (landmark NME, head pose), lighting kept."""
    targets = [Path(p) for p in s.record["inputs"]["target"]]
    name = targets[0].parent.name
    skin = skin_mask(s.frame.landmarks, s.frame.size, s.cfg.forehead, s.cfg.feather)
    row: dict[str, Any] = {"target": name,
                           "lighting_error": lighting_error(s.output_frame, s.frame.image, skin, s.frame.landmarks)}
    target_mean = identity_mean(targets)
    row["id_before"] = identity_distance(face_descriptor(s.source, s.face), target_mean)
    if s.output_face is None:
        return row
    descriptor = face_descriptor(s.output, s.output_face)
    row["id_after"] = identity_distance(descriptor, target_mean)
    row["id_drop"] = row["id_before"] - row["id_after"]
    identities = identity_sets(s.identities_root or targets[0].parent.parent)
    if identities:
        means = {k: identity_mean(v) for k, v in identities.items()}
        means.setdefault(name, target_mean)
        row["retrieved"] = nearest_identity(descriptor, means) == name
    row["nme"] = landmark_nme(s.output_face.landmarks, s.face.landmarks)
    row["d_yaw"], row["d_pitch"], row["d_roll"] = (head_pose(s.output_face.landmarks)
                                                   - head_pose(s.face.landmarks)).tolist()
    return row


@dataclass
class SwapResult(EditResult):
    targets: TargetSet | None = None


SWAP = register(Edit(
    name="swap", summary="Put the identity of the person photographed in TARGET onto the face in SOURCE.",
    source="source", inputs=(Input("target", "photos", "Folder (or list) of photos of the target person."),),
    presets=PRESETS, prepare=prepare, score=score, result_type=SwapResult))


def swap(source: str | os.PathLike | np.ndarray, target: str | os.PathLike | list, cfg: SwapConfig | None = None,
         face_index: int = 0, progress: bool = True) -> SwapResult:
    """Put the identity of the person in ``target`` (folder or list of photos) onto the face in ``source``."""
    return run_edit(SWAP, source, {"target": target}, cfg, face_index, progress=progress)
