"""Colour matching: per-channel mean/std transfer in CIELAB inside masks (Reinhard et al. 2001), via kornia."""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab


def _masked_stats(lab: torch.Tensor, mask: torch.Tensor):
    w = mask / mask.sum((2, 3), keepdim=True).clamp_min(1e-6)
    mean = (lab * w).sum((2, 3), keepdim=True)
    std = (((lab - mean) ** 2) * w).sum((2, 3), keepdim=True).sqrt()
    return mean, std


def match_color(image: torch.Tensor, reference: torch.Tensor, image_mask: torch.Tensor,
                reference_mask: torch.Tensor) -> torch.Tensor:
    """Shift/scale each Lab channel of ``image`` (B, 3, H, W) so its statistics inside ``image_mask`` equal
    those of ``reference`` (1 or B, 3, H', W') inside ``reference_mask``. Returns RGB in [0, 1]."""
    if image.ndim != 4 or image.shape[1] != 3 or reference.ndim != 4 or reference.shape[1] != 3:
        raise ValueError("image and reference must be (B, 3, H, W) RGB")
    lab, ref_lab = rgb_to_lab(image.clamp(0, 1)), rgb_to_lab(reference.clamp(0, 1))
    mean, std = _masked_stats(lab, image_mask)
    ref_mean, ref_std = _masked_stats(ref_lab, reference_mask)
    matched = (lab - mean) * (ref_std / std.clamp_min(1e-3)) + ref_mean
    return lab_to_rgb(matched).clamp(0, 1)
