"""Content loss (Gatys et al. 2016): squared feature difference to the source, relative to its energy."""

from __future__ import annotations

import torch
from torch import nn


def content_loss(x: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(target.shape)}")
    return ((x - target) ** 2).mean() / scale


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target.detach()
        self.scale = float((self.target**2).mean().clamp_min(1e-8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return content_loss(x, self.target, self.scale)
