"""Total-variation smoothing (Mahendran & Vedaldi 2015) on the image, via kornia."""

from __future__ import annotations

import torch
from kornia.losses import total_variation
from torch import nn


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute neighbour difference per channel, averaged over batch and channels."""
    if image.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(image.shape)}")
    return total_variation(image, reduction="mean").mean()


class TVLoss(nn.Module):
    """TV of the image, or with ``reference`` of the edit (image - reference): smooth changes, kept texture."""

    def __init__(self, reference: torch.Tensor | None = None):
        super().__init__()
        self.reference = None if reference is None else reference.detach()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return tv_loss(image if self.reference is None else image - self.reference)
