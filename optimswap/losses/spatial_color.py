"""Spatial colour loss: each region pixel's low-passed CIELAB colour pulled to the reference's at the same place.

A global histogram loss (``histogram.py``) knows which colours a region should have but not where, so a dark lid
colour can land under the eye. Here the reference is already warped onto the plain face, and each pixel's target
is the plain's colour plus ``degree`` times the difference of both faces' low-passed colours there: the low
frequencies follow the reference, the plain's fine detail (texture, its own highlights) stays. A per-pixel target
rather than a loss on the low-passed image: the latter leaves the fine change free, and TV on the change then
fills it with flat blotches. The three
CIELAB channels are compared jointly (Charbonnier on the Delta-E vector), which, unlike per-channel RGB matching,
makes no colours that neither face has. Lightness is low-passed more than chroma and the reference's lightness is
clipped to a central quantile range of its region, so a specular highlight (glossy lips) does not become a white
spot, nor a dark line (the closed lips' seam) a dark one.
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_lab
from torch import nn

from optimswap.compose import gaussian_blur

# Reference lightness outside these quantiles of its region is specular highlight or crease shadow, not makeup.
LIGHTNESS_QUANTILES = (0.1, 0.9)
CHARBONNIER_EPS = 0.01  # Delta-E of 1 in the loss's units: below it the loss is quadratic


def lab(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> CIELAB / 100 (all channels in the same Delta-E units) of the image clamped to [0, 1].

    The gradient passes the clamp unchanged (straight-through): a plain clamp stops it for a channel once a pixel
    leaves [0, 1], and a lip highlight pushed to red then drifts to odd colours (blue specks) with nothing to pull
    it back."""
    clamped = image + (image.clamp(0, 1) - image).detach()
    return rgb_to_lab(clamped) / 100


def masked_blur(image: torch.Tensor, weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``image`` that averages only where ``weight`` (1, 1, H, W) is, so colours from outside a
    region (skin beside the lips, the eyeball) do not bleed into it (normalized convolution)."""
    sigma = max(sigma, 0.5)
    return gaussian_blur(image * weight, sigma) / gaussian_blur(weight, sigma).clamp_min(1e-6)


def clip_lightness(lab_image: torch.Tensor, weight: torch.Tensor,
                   quantiles: tuple[float, float] = LIGHTNESS_QUANTILES) -> torch.Tensor:
    """Lightness clipped to the ``quantiles`` of its values where ``weight`` > 0.5."""
    lightness = lab_image[:, :1]
    inside = lightness[weight > 0.5]
    if inside.numel() == 0:
        return lab_image
    low, high = inside.quantile(torch.tensor(quantiles, dtype=inside.dtype, device=inside.device))
    return torch.cat([lightness.clamp(float(low), float(high)), lab_image[:, 1:]], 1)


class SpatialColorLoss(nn.Module):
    """Makeup loss of one region: weighted mean Charbonnier distance between the image's CIELAB and its target
    plain + degree * (low-pass(reference) - low-pass(plain)), over ``region`` (1, 1, H, W) times ``inside``
    (where the warped reference has pixels). ``chroma_sigma`` / ``lightness_sigma``: low-pass widths in pixels.
    ``follow_lightness`` False: the lightness stays the plain's and only the chroma follows (blush, tint): on skin
    the reference's lightness is mostly its lighting and exposure, not makeup, and copying it leaves pale patches
    with edges at the region's border. ``mean_share`` < 1: the reference's mean colour over the region is first moved
    towards the plain's, so that only that share of the difference of the two faces' overall tones follows, while
    the reference's local deviations from its own tone (blush, contour) follow in full. ``darkening_cap``: the
    largest darkening of a target (CIELAB L / 100; lightening, as in makeup removal, is not capped).
    ``lightness_quantiles``: where the reference's lightness is clipped (see LIGHTNESS_QUANTILES)."""

    def __init__(self, region: torch.Tensor, reference: torch.Tensor, plain: torch.Tensor,
                 inside: torch.Tensor | None = None, degree: float = 1.0, chroma_sigma: float = 2.0,
                 lightness_sigma: float = 4.0, follow_lightness: bool = True,
                 mean_share: float = 1.0, darkening_cap: float | None = None,
                 lightness_quantiles: tuple[float, float] = LIGHTNESS_QUANTILES):
        super().__init__()
        if not 0.0 <= degree <= 1.0:
            raise ValueError(f"degree must be in [0, 1], got {degree}")
        weight = region.detach() if inside is None else region.detach() * inside.detach()
        if float(weight.sum()) <= 0:
            raise ValueError("empty region")
        self.weight, self.chroma_sigma, self.lightness_sigma = weight, chroma_sigma, lightness_sigma
        self.follow_lightness = follow_lightness
        with torch.no_grad():
            reference_lab = clip_lightness(lab(reference.detach()), weight, lightness_quantiles)
            plain_lab = lab(plain.detach())
            if mean_share < 1:
                def mean(x: torch.Tensor) -> torch.Tensor:
                    return (x * weight).sum((2, 3), keepdim=True) / weight.sum()

                reference_lab = reference_lab + (1 - mean_share) * (mean(plain_lab) - mean(reference_lab))
            change = degree * (self.low_pass(reference_lab) - self.low_pass(plain_lab))
            if darkening_cap is not None:
                change = torch.cat([change[:, :1].clamp(min=-darkening_cap), change[:, 1:]], 1)
            self.target = plain_lab + change

    def low_pass(self, lab_image: torch.Tensor) -> torch.Tensor:
        lightness = lab_image[:, :1]
        # not followed: the same zero for plain and reference, so the target keeps the plain's lightness
        lightness = (masked_blur(lightness, self.weight, self.lightness_sigma) if self.follow_lightness
                     else torch.zeros_like(lightness))
        return torch.cat([lightness, masked_blur(lab_image[:, 1:], self.weight, self.chroma_sigma)], 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        diff = lab(image) - self.target
        distance = (diff.pow(2).sum(1, keepdim=True) + CHARBONNIER_EPS**2).sqrt() - CHARBONNIER_EPS
        return (distance * self.weight).sum() / self.weight.sum()
