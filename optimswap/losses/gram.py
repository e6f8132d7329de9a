"""Gram loss (Gatys et al. 2016) over a region: the squared difference of the feature Gram matrices, relative to the
target's. It matches the statistics of the whole region, which a nearest-patch loss does not: every patch can
find a close exemplar patch while the mix of patches stays the photo's."""

from __future__ import annotations

import torch
from torch import nn


def gram_matrix(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, C): sum over positions of ``mask`` x f f^T, divided by the mask's area; ``features`` (B, C, H, W),
    ``mask`` (B or 1, 1, H, W)."""
    if features.ndim != 4 or mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != features.shape[-2:]:
        raise ValueError(f"features (B, C, H, W) and mask (B, 1, H, W) expected, got {tuple(features.shape)} and "
                         f"{tuple(mask.shape)}")
    f = features.flatten(2)
    m = mask.flatten(2)
    return (f * m) @ f.transpose(1, 2) / m.sum((1, 2), keepdim=True).clamp_min(1e-8)


def gram_loss(features: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """|G(features) - target|^2 / |target|^2, with ``target`` a (B, C, C) Gram matrix over the same ``mask``."""
    gram = gram_matrix(features, mask)
    if gram.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"Gram shape mismatch {tuple(gram.shape)} vs {tuple(target.shape)}")
    return ((gram - target) ** 2).sum() / (target**2).sum().clamp_min(1e-12)


class GramLoss(nn.Module):
    """Gram loss of features over ``mask`` to ``target_features``' Gram matrix over the same mask."""

    def __init__(self, target_features: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.mask = mask.detach()
        self.target = gram_matrix(target_features.detach(), self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gram_loss(x, self.target, self.mask)
