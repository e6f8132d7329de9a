"""Lighting loss (Korshunova et al. 2017): distance of the edit to a reference in the lighting network's
embedding, in units of the network's same/different decision threshold (1 = as far as "lit differently")."""

from __future__ import annotations

import torch
from torch import nn

from optimswap.lighting.net import LightingNet


def lighting_loss(net: LightingNet, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the distance of aligned faces (B, 3, H, W) to target embeddings (B or 1, dim)."""
    if target.ndim != 2 or target.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"target embeddings {tuple(target.shape)} do not fit images {tuple(image.shape)}")
    return net.distance(net.embed(image), target).mean()


class LightingLoss(nn.Module):
    """Keeps the reference's lighting (the source frame's in a swap); its embedding is computed once."""

    def __init__(self, net: LightingNet, reference: torch.Tensor):
        super().__init__()
        self.net = net
        with torch.no_grad():
            self.target = net.embed(reference)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return lighting_loss(self.net, image, self.target)
