"""Low-frequency luminance loss: the shading of the face (its shape and the person's features at a coarse scale)
kept, while its tone and fine texture may change.

Lightness is blurred and standardised (mean 0, std 1 over the weighted region) before comparing, so a pencil
drawing's bright paper tone or an oil painting's dark one is not held back, only where the face is lighter or
darker than elsewhere. It is the grey (mean of R, G and B), whose gradient moves the three channels together:
CIELAB L, mostly green, made the term darken hair by taking out green (lilac hair tops) and lighten skin by
adding it (green faces).
"""

from __future__ import annotations

import torch
from torch import nn

from optimswap.compose import gaussian_blur


def low_luminance(image: torch.Tensor, sigma: float, weight: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) blurred grey standardised over ``weight`` (1, 1, H, W)."""
    lum = gaussian_blur(image.clamp(0, 1).mean(1, keepdim=True), sigma)
    total = weight.sum().clamp_min(1e-8)
    mean = (lum * weight).sum((2, 3), keepdim=True) / total
    std = (((lum - mean) ** 2 * weight).sum((2, 3), keepdim=True) / total).sqrt()
    return (lum - mean) / std.clamp_min(1e-4)


def luminance_loss(image: torch.Tensor, target: torch.Tensor, sigma: float, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean squared difference of ``image``'s standardised low-frequency lightness to ``target`` (that of
    the reference, from ``low_luminance``)."""
    return (weight * (low_luminance(image, sigma, weight) - target) ** 2).sum() / weight.sum().clamp_min(1e-8)


class LuminanceLoss(nn.Module):
    def __init__(self, reference: torch.Tensor, sigma: float, weight: torch.Tensor):
        super().__init__()
        self.sigma, self.weight = sigma, weight.detach()
        self.target = low_luminance(reference.detach(), sigma, self.weight)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return luminance_loss(image, self.target, self.sigma, self.weight)
