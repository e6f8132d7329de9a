"""Coarse-to-fine image pyramid for the optimization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.transform import resize


def level_sizes(size: int, levels: int) -> list[int]:
    """Frame sides from coarsest to finest, halving per level."""
    return [size // 2 ** (levels - 1 - i) for i in range(levels)]


def resize_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize with antialiasing when shrinking."""
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return resize(image, (size, size), interpolation="bilinear", antialias=True)


def pool_to(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Area-average a (B, 1, H, W) mask onto a feature grid."""
    return F.adaptive_avg_pool2d(mask, shape)
