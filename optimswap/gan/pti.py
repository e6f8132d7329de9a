"""Pivotal tuning (PTI, Roich et al. 2021): after the latent fit, the generator's weights are fine-tuned so that the
fitted latent (the pivot) draws the face more faithfully, while a locality regularizer keeps what the generator
draws away from the pivot as it was, so that edits keep their meaning. It is a stage of the ``invert`` edit's plan,
optimized by the pipeline like the fit: Adam at a constant learning rate on the synthesis network's weights of a
copy of the generator (the loaded one stays as it is), pixel MSE and VGG distance to the frame as in the fit.
"""

from __future__ import annotations

import torch
from torch import nn

from optimswap.features import VGGEncoder, load_encoder
from optimswap.gan.invert import InvertConfig, Rendering, fit_objective
from optimswap.gan.stylegan2 import Generator
from optimswap.losses import ContentLoss
from optimswap.objective import Term
from optimswap.optim import resize_to
from optimswap.pipeline import Latent, Level, Parameterization, Stage


class GeneratorWeights(Parameterization):
    """The synthesis network's weights, drawing the fixed pivot latent with its noise maps."""

    def __init__(self, g: Generator, pivot: Latent):
        self.g, self.rendering = g, Rendering(g)
        self.latent, self.noises = pivot.latent.detach(), tuple(n.detach() for n in pivot.extra)

    def start(self, level: Level) -> list[torch.Tensor]:
        self.level = level
        return list(self.g.synthesis.parameters())

    def render(self) -> torch.Tensor:
        return resize_to(self.rendering(self.latent, *self.noises), self.level.size)

    def finish(self) -> torch.Tensor:
        image = super().finish()
        self.g.requires_grad_(False)  # tuned: from here on it only draws
        return image


class Locality(nn.Module):
    """PTI's locality regularizer (sec. 3.3): at a latent ``distance`` from the pivot towards a random mapped one
    (per layer), the tuned generator should draw what the original draws (pixel MSE and VGG distance, weighted as the
    fit's terms). One seeded sample per evaluation; it reads the generators, not the image it is given."""

    def __init__(self, tuned: Generator, original: Generator, pivot: GeneratorWeights, distance: float, size: int,
                 cfg: InvertConfig, encoder: VGGEncoder | None):
        super().__init__()
        self.tuned, self.original = Rendering(tuned), Rendering(original)
        self.latent, self.noises, self.distance, self.size = pivot.latent, pivot.noises, distance, size
        self.cfg, self.encoder = cfg, encoder
        # On the pivot's device: a sample drawn on the host would be a copy to the GPU at every step.
        self.random = torch.Generator(self.latent.device).manual_seed(cfg.seed)

    def away(self) -> torch.Tensor:
        """A latent (1, num_ws, w_dim) ``distance`` from the pivot towards a random mapped one."""
        g = self.original.g
        pivot = self.latent[:, None].expand(-1, g.num_ws, -1) if self.latent.ndim == 2 else self.latent
        with torch.no_grad():
            w = g.mapping(torch.randn(1, g.arch.z_dim, generator=self.random, device=pivot.device))
        step = w[:, None] - pivot
        return pivot + self.distance * step / step.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        ws = self.away()
        with torch.no_grad():
            before = resize_to(self.original(ws, *self.noises), self.size)
        now = resize_to(self.tuned(ws, *self.noises), self.size)
        loss = self.cfg.pixel_weight * (now - before).square().mean()
        if self.encoder is not None:
            layers = list(self.cfg.perceptual_layers)
            feats_now, feats_before = self.encoder(now, layers), self.encoder(before, layers)
            loss = loss + self.cfg.perceptual_weight / len(layers) * sum(
                ContentLoss(feats_before[layer])(feats_now[layer]) for layer in layers)
        return loss


def pti_stage(original: Generator, tuned: Generator, pivot: Latent, target: torch.Tensor, cfg: InvertConfig,
              device: torch.device) -> Stage:
    """The tuning stage: ``tuned`` (a copy of ``original``) fitted to the frame-sized ``target`` at the ``pivot``
    latent as fitted, with the locality term."""
    weights = GeneratorWeights(tuned, pivot)
    encoder = load_encoder(cfg.encoder, device) if cfg.perceptual_weight > 0 else None  # the fit's, cached
    objective = fit_objective(cfg, device, target, lambda level: [Term(
        "locality", cfg.pti_locality, Locality(tuned, original, weights, cfg.pti_distance, level.size, cfg,
                                               encoder), None)])
    stage_cfg = cfg.replace(optimizer="adam", lr=cfg.pti_lr, iters=cfg.pti_steps, levels=1, lr_rampup=0.0,
                            lr_rampdown=0.0, refresh_every=cfg.pti_steps)
    return Stage("pti", objective, weights, stage_cfg)
