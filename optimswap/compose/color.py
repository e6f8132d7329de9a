"""Colour matching in CIELAB via kornia: per-channel mean/std transfer inside masks (Reinhard et al. 2001), and the
coarse colour of one image given to another."""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab

from optimswap.compose.blend import gaussian_blur


def _masked_stats(lab: torch.Tensor, mask: torch.Tensor):
    w = mask / mask.sum((2, 3), keepdim=True).clamp_min(1e-6)
    mean = (lab * w).sum((2, 3), keepdim=True)
    std = (((lab - mean) ** 2) * w).sum((2, 3), keepdim=True).sqrt()
    return mean, std


def match_color(image: torch.Tensor, reference: torch.Tensor, image_mask: torch.Tensor,
                reference_mask: torch.Tensor, spread: bool = True) -> torch.Tensor:
    """Shift/scale each Lab channel of ``image`` (B, 3, H, W) so its statistics inside ``image_mask`` equal
    those of ``reference`` (1 or B, 3, H', W') inside ``reference_mask``; with ``spread`` False only the means,
    keeping the image's own contrast. Returns RGB in [0, 1]."""
    if image.ndim != 4 or image.shape[1] != 3 or reference.ndim != 4 or reference.shape[1] != 3:
        raise ValueError("image and reference must be (B, 3, H, W) RGB")
    lab, ref_lab = rgb_to_lab(image.clamp(0, 1)), rgb_to_lab(reference.clamp(0, 1))
    mean, std = _masked_stats(lab, image_mask)
    ref_mean, ref_std = _masked_stats(ref_lab, reference_mask)
    scale = ref_std / std.clamp_min(1e-3) if spread else 1.0
    matched = (lab - mean) * scale + ref_mean
    return lab_to_rgb(matched).clamp(0, 1)


def with_coarse_color(image: torch.Tensor, base: torch.Tensor, sigma: float, region: torch.Tensor,
                      lightness: bool = False) -> torch.Tensor:
    """``image`` (1, 3, H, W) whose chroma (CIELAB a, b), and with ``lightness`` also its L, blurred at ``sigma``
    pixels is ``base``'s inside ``region`` (1, 1, H, W), in proportion to it; the rest and everything finer than
    ``sigma`` stay ``image``'s, and pixels where ``region`` is 0 are returned unchanged, bit for bit."""
    if image.shape != base.shape or image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image and base must be the same (B, 3, H, W) RGB, got {tuple(image.shape)} and "
                         f"{tuple(base.shape)}")
    lab, base_lab = rgb_to_lab(image.clamp(0, 1)), rgb_to_lab(base.clamp(0, 1))
    first = 0 if lightness else 1
    shift = gaussian_blur(base_lab[:, first:] - lab[:, first:], sigma)  # blur(base) - blur(image): the blur is linear
    recoloured = lab_to_rgb(torch.cat([lab[:, :first], lab[:, first:] + shift], 1)).clamp(0, 1)
    return image + region * (recoloured - image)
