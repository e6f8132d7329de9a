"""Blending an edited face back into the photo: Laplacian-pyramid (multi-band) blending, Burt & Adelson 1983, and
the Gaussian blur the compositing steps share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import build_pyramid


def gaussian_blur(image: torch.Tensor, sigma: float, border: str = "reflect") -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with a kernel reaching 3 sigma either side."""
    k = 2 * int(3 * sigma) + 1
    return gaussian_blur2d(image, (k, k), (sigma, sigma), border_type=border)


def laplacian_blend(foreground: torch.Tensor, background: torch.Tensor, mask: torch.Tensor,
                    levels: int = 4) -> torch.Tensor:
    """Blend each frequency band with a correspondingly blurred mask; exact background where ``mask`` is 0.

    Low bands blend over a wide transition (no colour seam), high bands over a narrow one (no ghosting). The
    coarse masks reach outside the mask's support, so the result is then restricted to it: pixels the mask
    does not touch are returned unchanged, bit for bit.
    """
    if foreground.shape != background.shape or mask.shape[-2:] != foreground.shape[-2:]:
        raise ValueError("foreground, background and mask must share their spatial size")
    levels = max(1, min(levels, int(torch.tensor(min(foreground.shape[-2:])).log2()) - 2))
    # Blending the Gaussian levels and rebuilding with the same upsampling equals blending Laplacian bands.
    gauss_f, gauss_b, masks = (build_pyramid(t, levels) for t in (foreground, background, mask))
    out = masks[-1] * gauss_f[-1] + (1 - masks[-1]) * gauss_b[-1]
    for i in range(levels - 2, -1, -1):
        m, gf, gb = masks[i], gauss_f[i], gauss_b[i]
        band = m * (gf - _up(gauss_f[i + 1], gf)) + (1 - m) * (gb - _up(gauss_b[i + 1], gb))
        out = band + _up(out, gf)
    support = (mask > 0).to(foreground.dtype)
    return background + support * (out - background)


def _up(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(image, size=like.shape[-2:], mode="bilinear", align_corners=False)
