"""The one edit pipeline: photo -> face -> aligned frame -> objective -> optimizer over a pyramid -> composite.

It knows nothing of any particular edit: an edit (``optimswap.edits``) supplies the editable mask, a per-level
objective builder and a parameterization, and the pipeline runs them (then the plan's further stages, if any).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from kornia.geometry.transform import invert_affine_transform
from torch import nn
from tqdm.auto import tqdm

from optimswap.compose import gaussian_blur, laplacian_blend, match_color
from optimswap.config import EditConfig
from optimswap.errors import BackendUnavailable, OptimizationError
from optimswap.face import Face, face_mask, warp_from_frame, warp_to_frame
from optimswap.face.align import apply_matrix, warp_photo_to_frame
from optimswap.io import to_numpy, to_tensor
from optimswap.objective import Objective
from optimswap.optim import Solver, level_sizes, make_solver, resize_to

log = logging.getLogger(__name__)
CUT_SHARE = 0.01  # share of the face outside the photo above which a run warns that it is cut


def step(what: str, progress: bool) -> None:
    """A line on standard error as a step without a progress bar of its own starts (with ``progress``)."""
    if progress:
        tqdm.write(f"{what} ...", file=sys.stderr)


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` names ("auto": CUDA when there is one), checked to hold and hand back a tensor here:
    BackendUnavailable on ``device`` for a name torch does not know, a GPU this machine lacks (cuda, mps, xla ...) or
    a device without data (meta)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {name!r} requested but no CUDA GPU is available", option="device")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BackendUnavailable(f"unknown device {name!r} ({err})", option="device") from None
    try:
        torch.ones(1, device=device).cpu()
    except Exception:  # RuntimeError (no such backend), NotImplementedError (meta), ModuleNotFoundError (hpu) ...
        raise BackendUnavailable(f"device {name!r} is not usable here (torch on this machine cannot put a tensor "
                                 "there and read it back); use auto, cpu or cuda", option="device") from None
    return device


def configure_device(device: torch.device, tf32: bool) -> None:
    """Process-wide CUDA settings for a run: cuDNN times its convolution algorithms once per shape and keeps the
    fastest (a pyramid has a few shapes, each evaluated hundreds of times), and uses TF32 only if ``tf32``.
    Matrix products (patch search, Gram matrices) stay in float32 either way."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = tf32


@dataclass
class Frame:
    """A face resampled into the aligned square working frame."""

    matrix: np.ndarray  # 2x3, photo pixels -> frame pixels
    image: torch.Tensor  # (1, 3, S, S) in [0, 1]
    landmarks: np.ndarray  # (68, 2) frame pixels
    mask: torch.Tensor  # (1, 1, S, S) soft editable mask
    dense: np.ndarray | None = None  # (478, 2) frame pixels: the MediaPipe mesh, when the face has one

    @property
    def size(self) -> int:
        return self.image.shape[-1]


# (frame landmarks, frame size, config, device, frame mesh or None) -> (1, 1, S, S) soft mask of what the edit may
# change
MaskFn = Callable[[np.ndarray, int, Any, torch.device, np.ndarray | None], torch.Tensor]


def make_frame(photo: torch.Tensor, face: Face, cfg: EditConfig, mask_fn: MaskFn) -> Frame:
    """The aligned frame of ``face`` in ``photo`` (1, 3, H, W) with the edit's editable mask."""
    matrix = cfg.frame_matrix(face.landmarks, *photo.shape[-2:])
    landmarks = apply_matrix(matrix, face.landmarks)
    dense = None if face.dense is None else apply_matrix(matrix, face.dense[:, :2])
    image = warp_to_frame(photo, matrix, cfg.size)
    return Frame(matrix, image, landmarks, mask_fn(landmarks, cfg.size, cfg, photo.device, dense), dense)


def photo_region(height: int, width: int, face: Face, cfg: EditConfig) -> tuple[slice, slice]:
    """The part of a photo (rows, columns) an edit of ``face`` reads and changes: the aligned frame's footprint (the
    editable mask lies inside it) and around it a quarter of the frame's side plus the blending's coarsest cell
    (photo-space blurs and the multi-band blend reach that far), within the photo. A camera photo's face is a small
    part of it: the edit and its composite then cost what the face does, not the photo."""
    matrix = cfg.frame_matrix(face.landmarks, height, width)
    edge = cfg.size - 0.5
    to_photo = invert_affine_transform(torch.as_tensor(matrix)[None])[0].numpy()
    corners = apply_matrix(to_photo, np.array([[-0.5, -0.5], [edge, -0.5], [edge, edge], [-0.5, edge]]))
    side = float(np.hypot(*(corners[1] - corners[0])))
    margin = 0.25 * side + 2 ** (cfg.blend_levels + 1)
    (x0, y0), (x1, y1) = corners.min(0) - margin, corners.max(0) + margin
    rows = slice(int(np.clip(np.floor(y0), 0, height)), int(np.clip(np.ceil(y1) + 1, 0, height)))
    columns = slice(int(np.clip(np.floor(x0), 0, width)), int(np.clip(np.ceil(x1) + 1, 0, width)))
    return rows, columns


def frame_moved(frame: Frame, dx: float, dy: float) -> Frame:
    """``frame`` whose matrix reads a photo moved by (dx, dy) pixels (a crop's frame in the whole photo)."""
    matrix = frame.matrix.copy()
    matrix[:, 2] -= matrix[:, :2] @ [dx, dy]
    return dataclasses.replace(frame, matrix=matrix)


@dataclass
class Level:
    """One pyramid level: the source frame, the editable mask and the image the edit starts from at this size."""

    size: int
    image: torch.Tensor
    mask: torch.Tensor
    start: torch.Tensor
    init: torch.Tensor | None = None  # where the parameters begin instead of the start (see ``Plan.init``)


class Parameterization(ABC):
    """What the solver moves, and how it becomes the frame's image at the current pyramid level."""

    @abstractmethod
    def start(self, level: Level) -> list[torch.Tensor]:
        """Begin a level; returns the tensors to optimize."""

    @abstractmethod
    def render(self) -> torch.Tensor:
        """The current image (1, 3, S, S) at the level's size, differentiable in the parameters."""

    def finish(self) -> torch.Tensor:
        """End a level; returns its result image, clamped to [0, 1]."""
        with torch.no_grad():
            return self.render().clamp(0, 1).detach()

    def still(self, level: Level) -> torch.Tensor:
        """The result when nothing is optimized (a plan or stage without objective): the level's start."""
        return level.start


class MaskedPixels(Parameterization):
    """Pixels inside the editable mask: image = source + mask * (param - source), so only masked pixels move.

    The first level starts from the level's start image (the source, or where the edit begins, e.g. another
    method's result); a finer level starts from its own start image plus the coarser level's change to it,
    upsampled as a difference, so that it keeps the start's own detail.
    """

    def __init__(self) -> None:
        self.result: torch.Tensor | None = None
        self.previous_start: torch.Tensor | None = None

    def start(self, level: Level) -> list[torch.Tensor]:
        self.level = level
        if self.result is None or self.previous_start is None:
            init = level.start if level.init is None else level.init
        else:
            init = level.start + resize_to(self.result - self.previous_start, level.size)
        self.param = init.detach().clone()
        return [self.param]

    def render(self) -> torch.Tensor:
        return self.level.image + self.level.mask * (self.param - self.level.image)

    def finish(self) -> torch.Tensor:
        self.result, self.previous_start = super().finish(), self.level.start
        return self.result


class Latent(Parameterization):
    """A latent code (and optionally more tensors, e.g. noise maps) rendered by a generator into the frame.

    ``generator(latent, *extra)`` returns (1, 3, H, W) in [0, 1]; it is resized to each level's size. The same
    tensors carry over from level to level.
    """

    def __init__(self, generator: nn.Module, latent: torch.Tensor, extra: tuple[torch.Tensor, ...] = ()):
        self.generator = generator
        self.latent = latent.detach().clone()
        self.extra = tuple(t.detach().clone() for t in extra)

    def start(self, level: Level) -> list[torch.Tensor]:
        self.level = level
        return [self.latent, *self.extra]

    def render(self) -> torch.Tensor:
        return resize_to(self.generator(self.latent, *self.extra), self.level.size)

    def still(self, level: Level) -> torch.Tensor:
        """The generator's image of the latent as it is."""
        self.start(level)
        return self.finish()


@dataclass
class Stage:
    """An optimization after the plan's own, in the same frame and from the result before it (e.g. PTI's generator
    tuning after a latent fit; an edited latent's rendering, with nothing to optimize), with its own options."""

    name: str
    objective: Callable[[Level], Objective] | None  # None: the parameterization's ``still`` image is the result
    parameterization: Parameterization
    cfg: EditConfig  # its pyramid, iterations and solver


@dataclass
class Plan:
    """What an edit prepares for the pipeline once the source frame is known."""

    objective: Callable[[Level], Objective] | None  # per-level objective builder; None: the start is the result
    parameterization: Parameterization = field(default_factory=MaskedPixels)
    # Where the edit starts, at the photo's resolution (1, 3, H, W); None: the photo. The optimized frame is put
    # back as a change to it, so its own detail above the frame's resolution is kept.
    start: torch.Tensor | None = None
    # (1, 1, H, W) in [0, 1]: share of each photo pixel kept as it is (occluders); the editable frame mask is
    # narrowed by it, and the composite restores it
    keep: torch.Tensor | None = None
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None  # last touch of the composite, at photo resolution
    record: dict = field(default_factory=dict)  # JSON-ready additions to the run record
    result: dict = field(default_factory=dict)  # extra fields of the edit's result type
    # Made and run in order once the plan's own optimization is done, each when the one before is (so it can use
    # what that one fitted); the last one's result is composited.
    stages: tuple[Callable[[], Stage], ...] = ()
    # Frame-sized image the optimization begins from, its change still put back onto ``start`` (a video's previous
    # frame's result carried to this frame: a warm start); None: the start itself.
    init: torch.Tensor | None = None


@dataclass
class EditResult:
    image: np.ndarray  # full photo, uint8
    frame_result: torch.Tensor  # optimized frame (1, 3, S, S)
    frame: Frame
    source_face: Face
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    levels: list[torch.Tensor] = field(default_factory=list)  # the optimized frame after each pyramid level
    record: dict = field(default_factory=dict)  # the edit's additions to the run record
    recoveries: list[dict] = field(default_factory=list)  # the solver's restarts after faults (level, eval, ...)


def optimize_frame(frame: Frame, start: torch.Tensor, cfg: EditConfig, plan: Plan | Stage, solver: Solver,
                   progress: bool = True, label: str = "", init: torch.Tensor | None = None,
                   ) -> tuple[list[torch.Tensor], list[dict], dict, list[dict]]:
    """Coarse-to-fine optimization from the frame-sized ``start`` (its parameters begin at ``init`` when given, see
    ``Plan.init``); returns each level's result (the last is the
    answer), the per-evaluation loss history, timings and the solver's restarts after faults (see
    ``optimswap.optim.solver``). OptimizationError naming the level when a level cannot be recovered."""
    torch.manual_seed(cfg.seed)
    history: list[dict] = []
    timings: dict = {}
    recoveries: list[dict] = []
    results = []
    if plan.objective is None:
        still = plan.parameterization.still(Level(cfg.size, frame.image, frame.mask, start))
        return [still], history, timings, recoveries
    sizes = level_sizes(cfg.size, cfg.levels)
    for i, size in enumerate(sizes):
        t0 = time.perf_counter()
        level = Level(size, resize_to(frame.image, size), resize_to(frame.mask, size).clamp(0, 1),
                      resize_to(start, size), None if init is None else resize_to(init, size))
        objective = plan.objective(level)
        params = plan.parameterization.start(level)
        timings[f"level{i}_setup_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            level_history = solver.run(params, plan.parameterization.render, objective, cfg.iters,
                                       desc=f"{label}level {i + 1}/{len(sizes)} ({size}px)", progress=progress)
        except OptimizationError as err:
            where = f"{label}level {i + 1} of {len(sizes)} ({size} px)"
            raise OptimizationError(f"optimization diverged at {where}: {err}") from err
        timings[f"level{i}_optimize_s"] = time.perf_counter() - t1
        timings[f"level{i}_evaluations"] = len(level_history)
        history += [{"level": i, **h} for h in level_history]
        recoveries += [{"level": i, **r} for r in solver.recoveries]
        results.append(plan.parameterization.finish())
    return results, history, timings, recoveries


def optimize_plan(frame: Frame, start: torch.Tensor, cfg: EditConfig, plan: Plan, solver: Solver,
                  progress: bool = True) -> tuple[list[torch.Tensor], list[dict], dict, list[dict]]:
    """``optimize_frame`` for the plan, then for each of its stages from the result before (its own solver); a
    stage's history rows and restarts carry its name, its timings are prefixed with it."""
    levels, history, timings, recoveries = optimize_frame(frame, start, cfg, plan, solver, progress, init=plan.init)
    for make in plan.stages:
        stage = make()
        more, more_history, more_timings, more_recoveries = optimize_frame(
            frame, levels[-1], stage.cfg, stage, make_solver(stage.cfg), progress, label=f"{stage.name}: ")
        levels += more
        history += [{"stage": stage.name, **h} for h in more_history]
        timings.update({f"{stage.name}_{k}": v for k, v in more_timings.items()})
        recoveries += [{"stage": stage.name, **r} for r in more_recoveries]
    return levels, history, timings, recoveries


def composite(photo: torch.Tensor, frame: Frame, result: torch.Tensor, cfg: EditConfig,
              start: torch.Tensor | None = None, keep: torch.Tensor | None = None,
              finish: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Put the optimized frame back: colour-match, transfer it as a change to ``start`` (the photo by default),
    multi-band blend into the photo, apply the edit's ``finish``, then restore the ``keep`` share of each photo
    pixel."""
    if cfg.color_match_result:
        matched = match_color(result, frame.image, frame.mask, frame.mask)
        result = frame.image + frame.mask * (matched - frame.image)
    _, _, h, w = photo.shape
    base = photo if start is None else start
    base_frame = frame.image if start is None else warp_to_frame(start, frame.matrix, frame.size)
    change = result - base_frame
    if cfg.change_sigma > 0:
        change = gaussian_blur(change, cfg.change_sigma, "replicate")
    delta = warp_from_frame(change, frame.matrix, h, w)
    mask = warp_from_frame(frame.mask, frame.matrix, h, w).clamp(0, 1)
    out = laplacian_blend((base + delta).clamp(0, 1), photo, mask, cfg.blend_levels)
    if finish is not None:
        out = finish(out)
    return with_kept(out, photo, keep)


def with_kept(image: torch.Tensor, photo: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``image`` with the ``keep`` share (see ``Plan.keep``) of each photo pixel restored to the ``photo``'s."""
    return image if keep is None else image + keep * (photo - image)


def editable_mask(frame: Frame, keep: torch.Tensor | None) -> torch.Tensor:
    """The frame's mask less the ``keep`` share (photo pixels, see ``Plan.keep``): what the edit may change. Where
    the frame reaches past the photo there is nothing to change: a terms' region (e.g. a Gram loss over the head)
    must not count pixels no output shows."""
    if keep is None:
        return frame.mask
    kept, in_photo = warp_photo_to_frame(keep, frame.matrix, frame.size).split(1, 1)
    return frame.mask * (1 - kept) * (in_photo > 0.5)


def warn_if_cut(photo: torch.Tensor, frame: Frame) -> None:
    """One line when part of the face (jaw line and raised brows, whatever region the edit changes) lies outside the
    photo: nothing there to read, and an edit's colours darken towards the border."""
    in_photo = warp_photo_to_frame(photo[:, :1], frame.matrix, frame.size)[:, 1:]
    face = face_mask(frame.landmarks, frame.size, device=photo.device)
    outside = float((face * (in_photo < 0.5)).sum() / face.sum().clamp_min(1e-8))
    if outside > CUT_SHARE:
        log.warning("the face is cut by the photo's border (%.0f %% of it lies outside); the result may show a dark "
                    "smear along the border", 100 * outside)


def run_pipeline(photo: np.ndarray, face: Face, cfg: EditConfig, mask_fn: MaskFn,
                 prepare: Callable[[Frame, torch.device], Plan], solver: Solver | None = None,
                 progress: bool = True) -> tuple[EditResult, Plan]:
    """Run one edit on ``photo``'s ``face``: ``mask_fn`` gives the editable region, ``prepare(frame, device)`` the
    plan (objective, parameterization); ``solver`` defaults to the one ``cfg`` selects."""
    device = resolve_device(cfg.device)
    configure_device(device, cfg.tf32)
    t0 = time.perf_counter()
    photo_t = to_tensor(photo, device)
    frame = make_frame(photo_t, face, cfg, mask_fn)
    warn_if_cut(photo_t, frame)
    step("preparing the edit", progress)
    plan = prepare(frame, device)
    if plan.keep is not None:
        frame = dataclasses.replace(frame, mask=editable_mask(frame, plan.keep))
    start = frame.image if plan.start is None else warp_to_frame(plan.start, frame.matrix, cfg.size)
    prepare_s = time.perf_counter() - t0
    levels, history, timings, recoveries = optimize_plan(frame, start, cfg, plan, solver or make_solver(cfg),
                                                         progress)
    t1 = time.perf_counter()
    step("compositing the face into the photo", progress)
    with torch.no_grad():
        out = composite(photo_t, frame, levels[-1], cfg, plan.start, plan.keep, plan.finish)
    timings.update(prepare_s=prepare_s, composite_s=time.perf_counter() - t1, total_s=time.perf_counter() - t0)
    result = EditResult(to_numpy(out), levels[-1], frame, face, history, timings, levels, plan.record, recoveries)
    return result, plan
