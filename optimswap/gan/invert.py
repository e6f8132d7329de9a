"""StyleGAN2 inversion (projection): a W or W+ latent and the per-layer noise maps fitted to the face frame, through
the pipeline's ``Latent`` parameterization; registered as the edit ``invert``.

The ``default`` preset is the NVlabs stylegan2-ada-pytorch projector (``projector.py``, Karras et al. 2020): Adam,
1000 steps, lr 0.1 with 5 % linear ramp-up and 25 % cosine ramp-down, W noise 0.05 x the W spread fading
quadratically to zero over the first 75 % of the steps, noise regularization weight 1e5, start at the mean W of
10 000 mapped samples. The perceptual distance is the project's VGG encoder (relative feature MSE) instead of
LPIPS, plus a pixel MSE. ``lbfgs`` fits W+ by L-BFGS (no W noise: the line search needs a fixed objective).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optimswap.config import EditConfig, option
from optimswap.errors import OptionError
from optimswap.features import load_encoder
from optimswap.gan.checkpoint import load_generator, resolve_generator_path
from optimswap.gan.stylegan2 import Generator
from optimswap.losses import ContentLoss
from optimswap.objective import Objective, Term
from optimswap.optim import Solver, make_solver
from optimswap.pipeline import EditResult, Frame, Latent, Level, Plan, optimize_frame
from optimswap.registry import Edit, Setup, register

SPACES = ("w", "w+")


@dataclass(frozen=True)
class InvertConfig(EditConfig):
    generator: str = option("ffhq-256", "StyleGAN2 weights: NVlabs .pkl or rosinality .pt path, URL, or ffhq-256 / "
                                        "ffhq-1024 (official NVlabs FFHQ, fetched into the torch hub cache).")
    space: str = option("w+", "Latent space: w (one code) or w+ (one per layer).", choices=SPACES)
    levels: int = option(1, "Pyramid levels (the generator renders the whole frame at once).", low=1, high=6)
    iters: int = option(1000, "Optimizer steps (NVlabs projector: 1000).", low=1, high=100_000)
    optimizer: str = option("adam", "Solver: adam (NVlabs projector schedule) or lbfgs.",
                            choices=("lbfgs", "adam"))
    lr: float = option(0.1, "Adam's peak learning rate (NVlabs: 0.1) / L-BFGS's initial step.", low=0, above=True)
    refresh_every: int = option(1000, "Iterations between refreshes (nothing to refresh: L-BFGS memory span).", low=1)
    perceptual_weight: float = option(1.0, "Weight of the VGG feature distance.", low=0)
    perceptual_layers: tuple[str, ...] = option(("relu2_2", "relu3_3", "relu4_3"), "VGG layers of the distance.")
    pixel_weight: float = option(10.0, "Weight of the pixel MSE.", low=0)
    noise_reg: float = option(1e5, "Noise-map autocorrelation penalty (NVlabs: 1e5).", low=0)
    w_noise: float = option(0.05, "Adam: noise added to W, times the W spread (NVlabs: 0.05).", low=0)
    w_noise_ramp: float = option(0.75, "Share of the steps over which the W noise fades out (NVlabs: 0.75).",
                                 low=0, above=True, high=1)
    w_avg_samples: int = option(10_000, "Mapped samples for the start latent and W spread (NVlabs: 10 000).", low=1)
    optimize_noise: bool = option(True, "Fit the per-layer noise maps too.")
    color_match_result: bool = option(False, "Colour-match the rendered face before compositing.")
    ALIASES: ClassVar[dict[str, str]] = {"g": "generator"}

    def check(self) -> None:
        if self.optimizer == "lbfgs" and self.w_noise > 0:
            raise OptionError("w_noise", "must be 0 with lbfgs (its line search needs a fixed objective)")


@functools.cache
def _generator(path: Path, mtime: float, device: str) -> Generator:
    return load_generator(path, device)


def cached_generator(source: str, device: torch.device) -> Generator:
    """One loaded generator per file (and version of it) and device."""
    path = resolve_generator_path(source).resolve()
    return _generator(path, path.stat().st_mtime, str(device))


@torch.no_grad()
def w_stats(g: Generator, samples: int, seed: int = 123) -> tuple[torch.Tensor, float]:
    """Mean W of ``samples`` mapped z and their spread ``sqrt(mean |w - mean|^2)`` (NVlabs projector, seed 123)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, g.arch.z_dim)).float().to(g.w_avg.device)
    w = g.mapping(z)
    mean = w.mean(0, keepdim=True)
    return mean, float(((w - mean).square().sum() / samples).sqrt())


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation at one pixel shift, summed over an average-pooling pyramid down to 8 px (NVlabs)."""
    reg = noises[0].new_zeros(())
    for v in noises:
        while True:
            reg = reg + (v * torch.roll(v, 1, dims=3)).mean() ** 2 + (v * torch.roll(v, 1, dims=2)).mean() ** 2
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, 2)
    return reg


class NoiseRegularization(nn.Module):
    """A term on the noise maps, not the image (the ``Objective`` hands it the image, which it ignores)."""

    def __init__(self, noises: tuple[torch.Tensor, ...], normalize: nn.Module):
        super().__init__()
        self.noises, self.normalize = noises, normalize

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return noise_regularization([self.normalize(n) for n in self.noises])


class UnitNoise(nn.Module):
    """Noise maps used at zero mean and unit variance: the projector renormalises them after each step; as part of
    the forward pass the same holds without touching the optimizer's tensors."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return (v - v.mean()) / v.std().clamp_min(1e-8)


class Rendering(nn.Module):
    """(latent, *noise maps) -> the generator's image in [0, 1]; a W latent (1, w_dim) is broadcast to every layer.

    With ``w_noise``, each differentiable call (one per Adam step) adds Gaussian noise to W, scaled by
    ``w_std * w_noise * max(0, 1 - t / ramp) ** 2`` at progress ``t`` of ``iters`` steps (NVlabs projector)."""

    def __init__(self, g: Generator, w_std: float = 0.0, w_noise: float = 0.0, ramp: float = 0.75, iters: int = 1):
        super().__init__()
        self.g, self.unit = g, UnitNoise()
        self.w_std, self.w_noise, self.ramp, self.iters = w_std, w_noise, ramp, iters
        self.step = 0

    def forward(self, latent: torch.Tensor, *noises: torch.Tensor) -> torch.Tensor:
        ws = latent[:, None].expand(-1, self.g.num_ws, -1) if latent.ndim == 2 else latent
        if self.w_noise > 0 and torch.is_grad_enabled():
            t = self.step / self.iters
            ws = ws + torch.randn_like(ws) * self.w_std * self.w_noise * max(0.0, 1 - t / self.ramp) ** 2
            self.step += 1
        maps = [self.unit(n) for n in noises] if noises else None
        return (self.g.synthesis(ws, maps) + 1) / 2


def projection(g: Generator, cfg: InvertConfig, device: torch.device) -> tuple[Latent, Rendering]:
    """The start of a projection: mean W (repeated per layer for W+) and unit Gaussian noise maps (seeded)."""
    w_avg, w_std = w_stats(g, cfg.w_avg_samples)
    latent = w_avg if cfg.space == "w" else w_avg[:, None].repeat(1, g.num_ws, 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    noises = tuple(torch.randn(shape, generator=gen).to(device) for shape in g.noise_shapes()) \
        if cfg.optimize_noise else ()
    render = Rendering(g, w_std, cfg.w_noise if cfg.optimizer == "adam" else 0.0, cfg.w_noise_ramp, cfg.iters)
    return Latent(render, latent.to(device), noises), render


def objective_builder(cfg: InvertConfig, device: torch.device, parameterization: Latent, render: Rendering):
    encoder = load_encoder(cfg.encoder, device) if cfg.perceptual_weight > 0 else None

    def build(level: Level) -> Objective:
        target = level.image
        terms = [Term("pixel", cfg.pixel_weight, PixelMSE(target), None)]
        if encoder is not None:
            feats = encoder(target, list(cfg.perceptual_layers))
            terms += [Term(f"vgg_{layer}", cfg.perceptual_weight / len(cfg.perceptual_layers),
                           ContentLoss(feats[layer]), layer) for layer in cfg.perceptual_layers]
        if parameterization.extra:
            terms.append(Term("noise_reg", cfg.noise_reg, NoiseRegularization(parameterization.extra, render.unit),
                              None))
        return Objective(encoder, terms)

    return build


class PixelMSE(nn.Module):
    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target.detach()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.target).square().mean()


def projection_plan(g: Generator, cfg: InvertConfig, device: torch.device) -> Plan:
    parameterization, render = projection(g, cfg, device)
    return Plan(objective_builder(cfg, device, parameterization, render), parameterization,
                record={"generator": str(cfg.generator), "space": cfg.space, "num_ws": g.num_ws},
                result={"latent": parameterization.latent, "noises": parameterization.extra})


@dataclass
class InvertResult(EditResult):
    latent: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (1, w_dim) or (1, num_ws, w_dim)
    noises: tuple[torch.Tensor, ...] = ()  # as optimized; the generator uses them normalised (``UnitNoise``)


@dataclass
class Projection:
    image: torch.Tensor  # (1, 3, S, S) the fitted rendering
    latent: torch.Tensor
    noises: tuple[torch.Tensor, ...]
    history: list[dict]


def project(g: Generator, target: torch.Tensor, cfg: InvertConfig, solver: Solver | None = None,
            progress: bool = False) -> Projection:
    """Project a (1, 3, S, S) image in [0, 1] that is already a generator frame (no face alignment, no paste-back)."""
    frame = Frame(np.array([[1.0, 0, 0], [0, 1.0, 0]]), target, np.zeros((68, 2)), torch.ones_like(target[:, :1]))
    plan = projection_plan(g, cfg, target.device)
    levels, history, _, _ = optimize_frame(frame, target, cfg.replace(size=target.shape[-1]), plan,
                                           solver or make_solver(cfg), progress)
    return Projection(levels[-1], plan.result["latent"].detach(), plan.result["noises"], history)


def save_latent(path: Path, latent: torch.Tensor, noises: tuple[torch.Tensor, ...]) -> None:
    """The fitted latent and noise maps (as the generator uses them), for ``torch.load(weights_only=True)``."""
    unit = UnitNoise()
    torch.save({"latent": latent.detach().cpu(), "noises": [unit(n).detach().cpu() for n in noises]}, path)


def _prepare(setup: Setup) -> Plan:
    g = cached_generator(setup.cfg.generator, setup.device)
    return projection_plan(g, setup.cfg, setup.device)


INVERT_PRESETS = {"default": InvertConfig(), "lbfgs": InvertConfig(optimizer="lbfgs", lr=1.0, iters=200, w_noise=0.0,
                                                           refresh_every=50)}

invert = register(Edit(name="invert", summary="Fit a StyleGAN2 latent (W / W+) and noise maps to the face.",
                       source="photo", inputs=(), presets=INVERT_PRESETS, prepare=_prepare, result_type=InvertResult))
