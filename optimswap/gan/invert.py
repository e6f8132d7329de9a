"""StyleGAN2 inversion (projection): a W or W+ latent and the per-layer noise maps fitted to the face frame, through
the pipeline's ``Latent`` parameterization; and the options of the edit ``invert`` (``optimswap.gan.edit``), which
goes on from the fit to pivotal tuning and attribute moves.

The ``default`` preset is the NVlabs stylegan2-ada-pytorch projector (``projector.py``, Karras et al. 2020): Adam,
1000 steps, lr 0.1 with 5 % linear ramp-up and 25 % cosine ramp-down, W noise 0.05 x the W spread fading
quadratically to zero over the first 75 % of the steps, noise regularization weight 1e5, start at the mean W of
10 000 mapped samples. The perceptual distance is the project's VGG encoder (relative feature MSE) instead of
LPIPS, plus a pixel MSE. ``lbfgs`` fits W+ by L-BFGS (no W noise: the line search needs a fixed objective).
"""

from __future__ import annotations

import functools
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from optimswap.config import EditConfig, option
from optimswap.errors import OptionError
from optimswap.features import load_encoder
from optimswap.gan.checkpoint import FFHQ_URLS, load_generator, resolve_generator_path
from optimswap.gan.directions import parse_move
from optimswap.gan.stylegan2 import Generator, mapped_samples
from optimswap.losses import ContentLoss
from optimswap.objective import Objective, Term
from optimswap.optim import resize_to
from optimswap.pipeline import Latent, Level

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
    latent: str = option("", "A fitted latent (.pt written by optimswap invert) to use instead of fitting one.")
    # Pivotal tuning (Roich et al. 2021): their defaults are 350 steps of Adam at 3e-4, locality weight 0.1 at
    # distance 30 in W (FFHQ generators).
    pti_steps: int = option(0, "Pivotal tuning: Adam steps fine-tuning the generator around the latent (PTI: 350; "
                               "0: off).", low=0, high=100_000)
    pti_lr: float = option(3e-4, "Pivotal tuning's learning rate (PTI: 3e-4).", low=0, above=True, high=1)
    pti_locality: float = option(0.1, "Pivotal tuning's locality weight: renderings away from the latent stay the "
                                      "original generator's (PTI: 0.1).", low=0)
    pti_distance: float = option(30.0, "Pivotal tuning's locality: distance in W from the latent towards random "
                                       "ones (PTI: 30).", low=0, above=True)
    directions: str = option("", "File of named directions (optimswap directions sefa|fit) for attr and keep.")
    attr: tuple[str, ...] = option((), "Moves NAME=STRENGTH along named directions of the directions file.")
    direction: tuple[str, ...] = option((), "Moves FILE=STRENGTH along external direction files (.npy / .pt).")
    keep: tuple[str, ...] = option((), "Named directions the moves are made orthogonal to, so that those attributes "
                                       "stay (InterFaceGAN's conditional edit).")
    color_match_result: bool = option(True, "Colour-match the rendered face to the photo's before compositing.")
    ALIASES: ClassVar[dict[str, str]] = {"g": "generator"}

    def check(self) -> None:
        if self.optimizer == "lbfgs" and self.w_noise > 0:
            raise OptionError("w_noise", "must be 0 with lbfgs (its line search needs a fixed objective)")
        if self.frame_scale != 1.0:  # the generators are trained on FFHQ's crop
            raise OptionError("frame_scale", f"must be 1 (FFHQ's crop, which the generator draws), got "
                                             f"{self.frame_scale:g}")
        for option_name in ("attr", "direction"):
            for move in getattr(self, option_name):
                parse_move(move, option_name)

    def input_files(self) -> list[str]:
        remote = self.generator in FFHQ_URLS or re.match(r"https?://", self.generator)
        moved = [parse_move(d, "direction")[0] for d in self.direction]
        return [f for f in ([] if remote else [self.generator]) + [self.latent, self.directions] + moved if f]


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
    w = mapped_samples(g, samples, seed)
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


def fit_objective(cfg: InvertConfig, device: torch.device, target: torch.Tensor,
                  regularizers: Callable[[Level], list[Term]]) -> Callable[[Level], Objective]:
    """Per level: pixel MSE and VGG distance to the frame-sized ``target`` at the level's size, plus the terms
    ``regularizers`` gives (terms that read no image)."""
    encoder = load_encoder(cfg.encoder, device) if cfg.perceptual_weight > 0 else None

    def build(level: Level) -> Objective:
        goal = resize_to(target, level.size)
        terms = [Term("pixel", cfg.pixel_weight, PixelMSE(goal), None)]
        if encoder is not None:
            feats = encoder(goal, list(cfg.perceptual_layers))
            terms += [Term(f"vgg_{layer}", cfg.perceptual_weight / len(cfg.perceptual_layers),
                           ContentLoss(feats[layer]), layer) for layer in cfg.perceptual_layers]
        return Objective(encoder, terms + regularizers(level))

    return build


def projection_objective(cfg: InvertConfig, device: torch.device, target: torch.Tensor, fit: Latent,
                         render: Rendering) -> Callable[[Level], Objective]:
    """The fit's objective: ``fit_objective`` plus the noise maps' regularization."""
    noise_reg = [Term("noise_reg", cfg.noise_reg, NoiseRegularization(fit.extra, render.unit), None)] if fit.extra \
        else []
    return fit_objective(cfg, device, target, lambda level: noise_reg)


class PixelMSE(nn.Module):
    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target.detach()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.target).square().mean()


def save_latent(path: Path, latent: torch.Tensor, noises: tuple[torch.Tensor, ...], about: dict | None = None) -> None:
    """The fitted latent and noise maps (as the generator uses them), and what made them (JSON-like ``about``), for
    ``torch.load(weights_only=True)``."""
    unit = UnitNoise()
    torch.save({"latent": latent.detach().cpu(), "noises": [unit(n).detach().cpu() for n in noises],
                **(about or {})}, path)


def load_latent(path: str | Path, g: Generator, device: torch.device) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A latent and its noise maps from a ``save_latent`` file, checked against ``g``; OptionError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise OptionError("latent", f"{path} not found; write one with optimswap invert PHOTO --generator G "
                                    "-o LATENT.pt")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise OptionError("latent", f"{path}: not a latent file ({str(err).splitlines()[0]})") from None
    latent, noises = (raw.get("latent"), raw.get("noises", [])) if isinstance(raw, dict) else (None, None)
    shapes = [(1, g.arch.w_dim), (1, g.num_ws, g.arch.w_dim)]
    if not isinstance(latent, torch.Tensor) or tuple(latent.shape) not in shapes:
        got = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise OptionError("latent", f"{path}: expected a latent of shape {shapes[0]} or {shapes[1]} for this "
                                    f"generator, got {got}")
    if not (isinstance(noises, list) and all(isinstance(n, torch.Tensor) for n in noises)) or \
            (noises and [tuple(n.shape) for n in noises] != g.noise_shapes()):
        raise OptionError("latent", f"{path}: its noise maps do not fit this generator")
    return latent.to(device), tuple(n.to(device) for n in noises)
