"""Clean skin told apart by its colour: a face's own skin colour, learnt where no beard grows (the landmark skin
above the nose's base: cheeks, nose, forehead), and how far each pixel's CIELAB colour is from it. Landmarks place
the skin, not what lies on it: a beard, stubble, a moustache, glasses' frames, a shadow of hair are darker or
greyer than the face's own skin and fall out."""

from __future__ import annotations

import numpy as np
import torch
from kornia.color import rgb_to_lab
from kornia.morphology import dilation

from optimswap.face.mask import soften
from optimswap.face.regions import features_mask, margin_kernel, skin_mask

NOSE_BASE = 33  # iBUG: the point below the nose tip; facial hair grows below it and along the jaw
# Spread floors (CIELAB units): an evenly lit, even face would otherwise set a spread so narrow that its own skin
# texture and shading fall out.
MIN_SPREAD = torch.tensor([4.0, 1.5, 1.5])
# Robust distance (spreads, over the three channels) up to which a pixel is skin, and from which it is not.
NEAR, FAR = 2.5, 4.0


def upper_skin_mask(landmarks: np.ndarray, size: int, forehead: float = 0.6, feather: float = 0.015,
                    device="cpu") -> torch.Tensor:
    """(1, 1, S, S): ``skin_mask`` above the nose's base (upright frame), where a face's skin colour is read."""
    rows = torch.arange(size, device=device, dtype=torch.float32)[:, None]
    above = (rows < float(landmarks[NOSE_BASE, 1])).float().expand(size, size)[None, None]
    return skin_mask(landmarks, size, forehead, feather, device=device) * above


def skin_likelihood(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) in [0, 1]: 1 where the pixel's CIELAB colour is within NEAR robust spreads (median absolute
    deviation, floored at MIN_SPREAD) of the colour of ``image`` (1, 3, H, W) where ``reference`` (1, 1, H, W) is
    above 0.5, falling linearly to 0 at FAR spreads."""
    if image.ndim != 4 or image.shape[:2] != (1, 3) or reference.shape != (1, 1, *image.shape[-2:]):
        raise ValueError(f"expected a (1, 3, H, W) image and a (1, 1, H, W) reference, got {tuple(image.shape)} and "
                         f"{tuple(reference.shape)}")
    lab = rgb_to_lab(image.clamp(0, 1))[0]
    inside = lab[:, reference[0, 0] > 0.5]  # (3, N)
    if inside.shape[1] == 0:
        raise ValueError("empty skin reference")
    median = inside.median(1).values
    spread = torch.maximum(1.4826 * (inside - median[:, None]).abs().median(1).values, MIN_SPREAD.to(lab))
    distance = (((lab - median[:, None, None]) / spread[:, None, None]) ** 2).sum(0).sqrt()
    return ((FAR - distance) / (FAR - NEAR)).clamp(0, 1)[None, None]


def clean_skin(images: list[torch.Tensor], landmarks: np.ndarray, size: int, forehead: float = 0.6,
               feather: float = 0.015) -> torch.Tensor:
    """(1, 1, S, S): the landmark skin of aligned frames ``images`` (each (1, 3, S, S), the face on ``landmarks``)
    that is skin-coloured in every one of them (the product of their likelihoods)."""
    device = images[0].device
    mask = skin_mask(landmarks, size, forehead, feather, device=device)
    reference = upper_skin_mask(landmarks, size, forehead, feather, device)
    for image in images:
        mask = mask * skin_likelihood(image, reference)
    return mask


def skin_pixels(image: torch.Tensor, landmarks: np.ndarray, size: int, forehead: float = 0.6,
                feather: float = 0.015) -> torch.Tensor:
    """(1, 1, S, S): where an aligned frame ``image`` (1, 3, S, S) shows the face's own skin, over the whole frame
    (not only inside the face's outline, as ``clean_skin``): skin-coloured, and never the eyes, brows or lips (grown
    by ``skin_mask``'s margin); softened by ``feather`` so that a change weighted by it fades smoothly, and exactly
    0 on the features themselves (the softening's tail there is below a few hundredths)."""
    reference = upper_skin_mask(landmarks, size, forehead, feather, image.device)
    sigma = max(feather * size, 0.5)
    features = features_mask(landmarks, size, image.device)
    skin = skin_likelihood(image, reference) * (1 - dilation(features, margin_kernel(landmarks, sigma, image.device)))
    return soften(skin, sigma) * (1 - features)


__all__ = ["clean_skin", "skin_likelihood", "skin_pixels", "upper_skin_mask"]
