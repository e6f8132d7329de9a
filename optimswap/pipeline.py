"""The one edit pipeline: photo -> face -> aligned frame -> objective -> L-BFGS over a pyramid -> composite.

An edit (swap, later makeup, stylize, ...) supplies only ``build_objective(level)``; everything else is here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from optimswap.compose import laplacian_blend, match_color
from optimswap.config import SwapConfig
from optimswap.face import Face, face_mask, frame_matrix, warp_from_frame, warp_to_frame
from optimswap.face.align import apply_matrix
from optimswap.io import to_numpy, to_tensor
from optimswap.objective import Objective
from optimswap.optim import level_sizes, resize_to, run_lbfgs


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA GPU is available")
    return torch.device(name)


@dataclass
class Frame:
    """A face resampled into the aligned square working frame."""

    matrix: np.ndarray  # 2x3, photo pixels -> frame pixels
    image: torch.Tensor  # (1, 3, S, S) in [0, 1]
    landmarks: np.ndarray  # (68, 2) frame pixels
    mask: torch.Tensor  # (1, 1, S, S) soft face mask

    @property
    def size(self) -> int:
        return self.image.shape[-1]


MaskFn = Callable[[np.ndarray, int, torch.device], torch.Tensor]  # (frame landmarks, size, device) -> (1, 1, S, S)


def make_frame(photo: torch.Tensor, face: Face, cfg: SwapConfig, mask_fn: MaskFn | None = None) -> Frame:
    """Aligned frame; the editable mask is the face mask unless ``mask_fn`` gives another."""
    matrix = frame_matrix(face.landmarks, cfg.size, cfg.frame_scale)
    landmarks = apply_matrix(matrix, face.landmarks)
    image = warp_to_frame(photo, matrix, cfg.size)
    if mask_fn is None:
        mask = face_mask(landmarks, cfg.size, cfg.forehead, cfg.feather, device=photo.device)
    else:
        mask = mask_fn(landmarks, cfg.size, photo.device)
    return Frame(matrix, image, landmarks, mask)


@dataclass
class Level:
    size: int
    image: torch.Tensor  # the source frame at this size
    mask: torch.Tensor


@dataclass
class EditResult:
    image: np.ndarray  # full photo, uint8
    frame_result: torch.Tensor  # optimized frame (1, 3, S, S)
    frame: Frame
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    levels: list[torch.Tensor] = field(default_factory=list)  # the optimized frame after each pyramid level


def optimize_frame(frame: Frame, cfg: SwapConfig, build_objective: Callable[[Level], Objective],
                   progress: bool = True) -> tuple[list[torch.Tensor], list[dict], dict]:
    """Coarse-to-fine L-BFGS; returns each level's result (the last is the answer), the loss history and timings.
    Only masked pixels move: image = source + mask * (param - source)."""
    torch.manual_seed(cfg.seed)
    history, timings, results = [], {}, []
    result = prev_source = None
    sizes = level_sizes(cfg.size, cfg.levels)
    for i, size in enumerate(sizes):
        t0 = time.perf_counter()
        level = Level(size, resize_to(frame.image, size), resize_to(frame.mask, size).clamp(0, 1))
        objective = build_objective(level)
        timings[f"level{i}_setup_s"] = time.perf_counter() - t0
        # Start from the source; carry the previous level's edit over as an upsampled difference so the
        # finer level keeps the source's own detail.
        init = level.image if result is None else level.image + resize_to(result - prev_source, size)
        param = init.detach().clone()

        def render(p, level=level):
            return level.image + level.mask * (p - level.image)

        t1 = time.perf_counter()
        level_history = run_lbfgs(param, render, objective, cfg.iters, cfg.refresh_every, cfg.lbfgs_history,
                                  desc=f"level {i + 1}/{len(sizes)} ({size}px)", progress=progress)
        timings[f"level{i}_optimize_s"] = time.perf_counter() - t1
        timings[f"level{i}_evaluations"] = len(level_history)
        history += [{"level": i, **h} for h in level_history]
        with torch.no_grad():
            result = render(param).clamp(0, 1)
        results.append(result.detach())
        prev_source = level.image
    return results, history, timings


def composite(photo: torch.Tensor, frame: Frame, result: torch.Tensor, cfg: SwapConfig) -> torch.Tensor:
    """Put the optimized frame back: colour-match, transfer the edit as a difference, multi-band blend."""
    if cfg.color_match_result:
        matched = match_color(result, frame.image, frame.mask, frame.mask)
        result = frame.image + frame.mask * (matched - frame.image)
    _, _, h, w = photo.shape
    delta = warp_from_frame(result - frame.image, frame.matrix, h, w)
    mask = warp_from_frame(frame.mask, frame.matrix, h, w).clamp(0, 1)
    return laplacian_blend((photo + delta).clamp(0, 1), photo, mask, cfg.blend_levels)


def edit(photo: np.ndarray, face: Face, cfg: SwapConfig, build_objective: Callable[[Frame, torch.device], Callable[[Level], Objective]],
         progress: bool = True, mask_fn: MaskFn | None = None) -> EditResult:
    """Run one edit on ``photo``'s ``face``; ``build_objective(frame, device)`` returns the per-level builder;
    ``mask_fn`` gives the editable region (default: the face mask)."""
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    photo_t = to_tensor(photo, device)
    frame = make_frame(photo_t, face, cfg, mask_fn)
    builder = build_objective(frame, device)
    prepare_s = time.perf_counter() - t0
    levels, history, timings = optimize_frame(frame, cfg, builder, progress)
    t1 = time.perf_counter()
    with torch.no_grad():
        out = composite(photo_t, frame, levels[-1], cfg)
    timings.update(prepare_s=prepare_s, composite_s=time.perf_counter() - t1, total_s=time.perf_counter() - t0)
    return EditResult(to_numpy(out), levels[-1], frame, history, timings, levels)
