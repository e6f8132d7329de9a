"""Fine detail of an image region: the energy of the lightness Laplacian, read alike by the swap's detail matching
and by eval's hf_ratio, so that what the method aims at is what the metric reports."""

from __future__ import annotations

import torch
from kornia.color import rgb_to_lab
from kornia.filters import laplacian


def detail_energy(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared 3x3 Laplacian of CIELAB lightness (0..1) of ``image`` (1, 3, H, W) weighted by ``mask``
    (1, 1, H, W)."""
    lightness = rgb_to_lab(image.clamp(0, 1))[:, :1] / 100.0
    return float((laplacian(lightness, 3) ** 2 * mask).sum() / mask.sum().clamp_min(1e-6))
