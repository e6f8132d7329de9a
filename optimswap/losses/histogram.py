"""Histogram-matched makeup loss (BeautyGAN, Li et al. 2018) with IPM-Net's degree (Huang et al. 2022).

For a region, every channel of the image's pixels (R, G, B as in BeautyGAN, or CIELAB, see ``to_color_space``)
is histogram-matched to the reference's pixels of that region
(exact 1-D optimal transport: the k-th smallest value goes to the reference quantile of the same rank); the
matched values are a fixed (detached) target and the loss is the L1 distance to them. ``degree`` moves the target
quantiles from the plain photo's (0: the input is its own target) to the reference's (1: full makeup).
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_lab
from torch import nn

COLOR_SPACES = ("rgb", "lab")


def to_color_space(image: torch.Tensor, space: str) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> the matching space, each channel scaled to about [0, 1]: "rgb" as is;
    "lab" = CIELAB with L / 100 and (a, b + 128) / 255, whose channels are far less correlated than R, G, B, so
    matching them one by one makes fewer colours that neither histogram has."""
    if space == "rgb":
        return image
    if space == "lab":
        lab = rgb_to_lab(image.clamp(0, 1))
        return torch.cat([lab[:, :1] / 100, (lab[:, 1:] + 128) / 255], 1)
    raise ValueError(f"unknown colour space {space!r}; choose from {COLOR_SPACES}")


def pixels_to_color_space(values: torch.Tensor, space: str) -> torch.Tensor:
    """The same for a pixel set (N, 3)."""
    return to_color_space(values.T[None, :, :, None], space)[0, :, :, 0].T


def quantiles(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Per-column quantiles of ``values`` (N, C) at ``levels`` (L,) in [0, 1], linear between order statistics.

    Level q sits at sorted position clamp(q N - 1/2, 0, N - 1) (Hazen). Not torch.quantile at mapped levels: its
    interpolation rounds differently in the last bit, which changes makeup outputs.
    """
    ordered = values.sort(0).values
    pos = (levels * values.shape[0] - 0.5).clamp(0, values.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=values.shape[0] - 1)
    frac = (pos - lo)[:, None]
    return ordered[lo] * (1 - frac) + ordered[hi] * frac


@torch.no_grad()
def histogram_targets(values: torch.Tensor, reference: torch.Tensor, plain: torch.Tensor | None = None,
                      degree: float = 1.0) -> torch.Tensor:
    """Target per value (N, C): the quantile of its rank in the blend (1 - degree) * plain + degree * reference."""
    if values.ndim != 2 or reference.ndim != 2 or values.shape[1] != reference.shape[1]:
        raise ValueError(f"expected (N, C) and (M, C), got {tuple(values.shape)} and {tuple(reference.shape)}")
    if not 0.0 <= degree <= 1.0:
        raise ValueError(f"degree must be in [0, 1], got {degree}")
    n = values.shape[0]
    ranks = values.argsort(0).argsort(0)
    levels = (torch.arange(n, device=values.device, dtype=values.dtype) + 0.5) / n
    goal = degree * quantiles(reference, levels)
    if degree < 1.0:
        goal = goal + (1 - degree) * quantiles(values if plain is None else plain, levels)
    return goal.gather(0, ranks)


def region_pixels(image: torch.Tensor, region: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C) values of ``image`` (1, C, H, W) where ``region`` (and ``inside``, if given) exceed 0.5: the pixel
    set a region's histogram is taken over."""
    where = region > 0.5 if inside is None else (region > 0.5) & (inside > 0.5)
    return image[0][:, where[0, 0]].T


def histogram_loss(image: torch.Tensor, region: torch.Tensor, reference: torch.Tensor,
                   plain: torch.Tensor | None = None, degree: float = 1.0) -> torch.Tensor:
    """Mean L1 between the region's pixels (``region`` (1, 1, H, W) > 0.5) of ``image`` (1, C, H, W) and their
    histogram-matched targets."""
    return matched_distance(region_pixels(image, region), reference, plain, degree)


def matched_distance(values: torch.Tensor, reference: torch.Tensor, plain: torch.Tensor | None = None,
                     degree: float = 1.0) -> torch.Tensor:
    """Mean L1 between pixel values (N, C) and their histogram-matched targets."""
    if values.shape[0] == 0:
        raise ValueError("empty region")
    return (values - histogram_targets(values, reference, plain, degree)).abs().mean()


class HistogramLoss(nn.Module):
    """Makeup loss of one region; ``reference`` (M, 3) and ``plain`` (N0, 3) are that region's RGB pixel values;
    the matching runs in ``space`` (see ``to_color_space``)."""

    def __init__(self, region: torch.Tensor, reference: torch.Tensor, plain: torch.Tensor | None = None,
                 degree: float = 1.0, space: str = "rgb"):
        super().__init__()
        self.region, self.degree, self.space = region.detach(), degree, space
        # The region's flat positions, found once: a boolean mask index at each evaluation is a GPU sync (its
        # result's size depends on the data). Same order as ``region_pixels``'.
        self.positions = (self.region[0, 0] > 0.5).flatten().nonzero()[:, 0]
        if self.positions.numel() == 0:
            raise ValueError("empty region")
        self.reference = pixels_to_color_space(reference.detach(), space)
        self.plain = None if plain is None else pixels_to_color_space(plain.detach(), space)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        values = to_color_space(image, self.space)[0].flatten(1).index_select(1, self.positions).T
        return matched_distance(values, self.reference, self.plain, self.degree)
