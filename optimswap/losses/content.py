"""Content loss (Gatys et al. 2016): squared feature difference to the source, relative to its energy; optionally
weighted per position (a region of the face)."""

from __future__ import annotations

import torch
from torch import nn


def content_loss(x: torch.Tensor, target: torch.Tensor, scale: float = 1.0,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference over (weighted) positions, divided by ``scale``; ``weight`` (1, 1, H, W)."""
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(target.shape)}")
    if weight is None:
        return ((x - target) ** 2).mean() / scale
    return (weight * (x - target) ** 2).mean(1, keepdim=True).sum() / weight.sum().clamp_min(1e-8) / scale


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor, weight: torch.Tensor | None = None):
        super().__init__()
        self.target = target.detach()
        self.weight = None if weight is None else weight.detach()
        self.scale = float((self.target**2).mean().clamp_min(1e-8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return content_loss(x, self.target, self.scale, self.weight)
