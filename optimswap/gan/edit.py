"""The edit ``invert``: attribute edits by StyleGAN2 inversion, on the one pipeline.

The frame is FFHQ's crop (``optimswap.face.align.ffhq_quad``); its plan fits a latent to it (or takes a fitted one,
``latent``), then runs as further stages pivotal tuning (``pti_steps``) and the rendering of the latent moved along
attribute directions (``attr``, ``direction``), and the pipeline composites the last rendering into the photo with
the colour matching and multi-band blending every edit uses. ``optimswap invert`` saves the latent (and the
reconstruction pasted back), ``optimswap edit`` the edited photo; both are this edit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from optimswap.face import warp_to_frame
from optimswap.gan.directions import Move, edit_latent, resolve_moves
from optimswap.gan.invert import (
    InvertConfig,
    Rendering,
    cached_generator,
    load_latent,
    projection,
    projection_objective,
)
from optimswap.gan.pti import pti_stage
from optimswap.gan.scorers import ATTRIBUTES
from optimswap.gan.stylegan2 import Generator
from optimswap.io import to_tensor
from optimswap.optim import Solver, make_solver
from optimswap.pipeline import EditResult, Frame, Latent, Plan, Stage, optimize_plan
from optimswap.registry import Edit, Scoring, Setup, register


def gan_plan(g: Generator, cfg: InvertConfig, target: torch.Tensor, device: torch.device,
             start: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None, moves: Sequence[Move] = ()) -> Plan:
    """The plan on a frame-sized ``target``: fit a latent (or take ``start``: a latent and its noise maps), then
    pivotal tuning if ``cfg.pti_steps``, then the rendering of the latent moved by ``moves``."""
    if start is None:
        fit, render = projection(g, cfg, device)
        objective = projection_objective(cfg, device, target, fit, render)
    else:  # nothing to fit: the start's rendering
        fit, objective = Latent(Rendering(g), *start), None
    tuned = copy.deepcopy(g) if cfg.pti_steps else g
    stages: list[Callable[[], Stage]] = []
    if cfg.pti_steps:
        stages.append(lambda: pti_stage(g, tuned, fit, target, cfg, device))
    if moves:
        stages.append(lambda: Stage("edit", None, Latent(Rendering(tuned), edit_latent(
            fit.latent, [(m.direction, m.strength) for m in moves]), fit.extra), cfg))
    record = {"generator": cfg.generator, "w_avg": g.w_avg_source, "space": "w" if fit.latent.ndim == 2 else "w+",
              "num_ws": g.num_ws,
              "moves": [m.describe() for m in moves]}
    return Plan(objective, fit, record=record, stages=tuple(stages),
                result={"latent": fit.latent, "noises": fit.extra, "generator": tuned})


@dataclass
class InvertResult(EditResult):
    latent: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (1, w_dim) or (1, num_ws, w_dim)
    noises: tuple[torch.Tensor, ...] = ()  # as optimized; the generator uses them normalised (``UnitNoise``)
    generator: nn.Module | None = None  # the generator that drew the result (PTI: the tuned copy)


@dataclass
class Projection:
    image: torch.Tensor  # (1, 3, S, S) the last rendering (fit, tuned, or edited)
    latent: torch.Tensor
    noises: tuple[torch.Tensor, ...]
    history: list[dict]
    generator: Generator


def project(g: Generator, target: torch.Tensor, cfg: InvertConfig, solver: Solver | None = None,
            progress: bool = False, moves: Sequence[Move] = ()) -> Projection:
    """The plan on a (1, 3, S, S) image in [0, 1] that is already a generator frame (no face alignment, no
    paste-back)."""
    frame = Frame(np.array([[1.0, 0, 0], [0, 1.0, 0]]), target, np.zeros((68, 2)), torch.ones_like(target[:, :1]))
    cfg = cfg.replace(size=target.shape[-1])
    plan = gan_plan(g, cfg, target, target.device, moves=moves)
    levels, history, _, _ = optimize_plan(frame, target, cfg, plan, solver or make_solver(cfg), progress)
    return Projection(levels[-1], plan.result["latent"].detach(), plan.result["noises"], history,
                      plan.result["generator"])


def _prepare(setup: Setup) -> Plan:
    cfg = setup.cfg
    g = cached_generator(cfg.generator, setup.device)
    moves = resolve_moves(cfg.attr, cfg.direction, cfg.directions, cfg.keep, g.arch.w_dim)
    start = load_latent(cfg.latent, g, setup.device) if cfg.latent else None
    # FFHQ's crop mirrors the photo where the quad leaves it, so the generator draws faces framed that way.
    target = warp_to_frame(to_tensor(setup.photo, setup.device), setup.frame.matrix, cfg.size, padding="reflection")
    return gan_plan(g, cfg, target, setup.device, start, moves)


def _score(scoring: Scoring) -> dict:
    """The attribute scores (``optimswap.gan.scorers``) of the photo's and the output's face."""
    if scoring.output_face is None:
        return {}
    return {f"{name}_{when}": score(face.landmarks) for name, score in ATTRIBUTES.items()
            for when, face in (("before", scoring.face), ("after", scoring.output_face))}


INVERT_PRESETS = {"default": InvertConfig(), "lbfgs": InvertConfig(optimizer="lbfgs", lr=1.0, iters=200, w_noise=0.0,
                                                           refresh_every=50)}

invert = register(Edit(name="invert", summary="StyleGAN2 edit: fit a latent (W / W+) and noise maps to the face (or "
                                              "take a fitted one), optionally tune the generator around it (PTI), "
                                              "move it along attribute directions and paste the rendering back.",
                       source="photo", inputs=(), presets=INVERT_PRESETS, prepare=_prepare, score=_score,
                       result_type=InvertResult))
