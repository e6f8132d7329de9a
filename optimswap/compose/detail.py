"""Fine detail of an image region: the energy of the lightness Laplacian, read alike by the swap's detail matching
and by eval's hf_ratio, so that what the method aims at is what the metric reports."""

from __future__ import annotations

import torch
from kornia.color import rgb_to_lab
from kornia.filters import laplacian

from optimswap.compose.blend import gaussian_blur


def detail_energy(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared 3x3 Laplacian of CIELAB lightness (0..1) of ``image`` (1, 3, H, W) weighted by ``mask``
    (1, 1, H, W)."""
    lightness = rgb_to_lab(image.clamp(0, 1))[:, :1] / 100.0
    return float((laplacian(lightness, 3) ** 2 * mask).sum() / mask.sum().clamp_min(1e-6))


def fine_detail_ratio(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Sharpness of ``image`` (1, 3, H, W) in ``mask``, free of how much texture the face has: ``detail_energy`` of
    the finest band over that of the octave below (the image blurred by a 1-pixel Gaussian). A face resampled up
    into a frame has little of the finest band (~2-3), one resampled down or sharp at its size much (~9-13)."""
    coarser = detail_energy(gaussian_blur(image, 1.0), mask)
    return detail_energy(image, mask) / max(coarser, 1e-12)
