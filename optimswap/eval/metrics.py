"""Objective measures of an edit: identity, pose/expression kept, background kept, lighting, artefacts.

Each is a plain function on numpy images (uint8 H x W x 3) or landmarks (68, 2), so that tests can feed them
constructed cases with known answers.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from kornia.color import rgb_to_lab
from kornia.metrics import psnr as kornia_psnr
from scipy.spatial.transform import Rotation
from scipy.stats import wasserstein_distance

from optimswap.compose import gaussian_blur
from optimswap.compose.detail import detail_energy
from optimswap.face.align import interocular

# Generic 3D head (millimetre-like units, x right, y up, z towards the camera) at six iBUG landmarks:
# nose tip, chin, outer eye corners, mouth corners. The widely used model of Mallick's head-pose
# tutorial (learnopencv.com, 2016); only angle differences are reported, so its bias cancels.
HEAD_MODEL_POINTS = np.array([30, 8, 36, 45, 48, 54])
HEAD_MODEL = np.array([(0.0, 0.0, 0.0), (0.0, -330.0, -65.0), (-225.0, 170.0, -135.0), (225.0, 170.0, -135.0),
                       (-150.0, -150.0, -125.0), (150.0, -150.0, -125.0)])


def identity_distance(descriptor: np.ndarray, reference: np.ndarray) -> float:
    """Euclidean distance of dlib face descriptors (same person usually < 0.6)."""
    return float(np.linalg.norm(np.asarray(descriptor) - np.asarray(reference)))


def nearest_identity(descriptor: np.ndarray, means: dict[str, np.ndarray]) -> str:
    """Name of the identity whose mean descriptor is closest."""
    if not means:
        raise ValueError("no identities to retrieve from")
    return min(means, key=lambda name: identity_distance(descriptor, means[name]))


def landmark_nme(landmarks: np.ndarray, reference: np.ndarray) -> float:
    """Mean point-to-point landmark error normalised by the reference's inter-ocular distance."""
    if landmarks.shape != reference.shape:
        raise ValueError(f"landmark shapes differ: {landmarks.shape} vs {reference.shape}")
    return float(np.linalg.norm(landmarks - reference, axis=1).mean() / interocular(reference))


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from a scaled-orthographic fit of HEAD_MODEL to the landmarks.

    Least squares for the 2x3 projection of the centred model, orthonormalised into a rotation
    R = Rx(pitch) Ry(yaw) Rz(roll): yaw > 0 turns the face towards image right, pitch > 0 lowers the chin,
    roll > 0 tilts it clockwise in the image.
    """
    image = landmarks[HEAD_MODEL_POINTS] * [1.0, -1.0]  # image y points down, the model's up
    model = HEAD_MODEL - HEAD_MODEL.mean(0)
    projection, *_ = np.linalg.lstsq(model, image - image.mean(0), rcond=None)  # (3, 2)
    r1, r2 = projection.T
    r1 = r1 / np.linalg.norm(r1)
    r2 = r2 - r1 * (r1 @ r2)
    r2 = r2 / np.linalg.norm(r2)
    pitch, yaw, roll = Rotation.from_matrix(np.stack([r1, r2, np.cross(r1, r2)])).as_euler("XYZ", degrees=True)
    return np.array([yaw, pitch, roll])


def psnr(image: np.ndarray, reference: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB (peak 255) over the pixels where ``where`` (H, W bool) holds; inf when identical."""
    a, b = torch.from_numpy(image.astype(np.float64)), torch.from_numpy(reference.astype(np.float64))
    if where is not None:
        inside = torch.as_tensor(where)
        a, b = a[inside], b[inside]
    if a.numel() == 0:
        raise ValueError("no pixels to compare")
    return float(kornia_psnr(a, b, 255.0))


def _luminance(image: torch.Tensor) -> torch.Tensor:
    return rgb_to_lab(image.clamp(0, 1))[:, :1] / 100.0


def lighting(image: torch.Tensor, skin: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
    """(level, horizontal, vertical): a first-order fit L(u, v) = a + b u + c v of CIELAB lightness over the skin,
    u, v in inter-ocular units from the face centre; returns (a, b / a, c / a).

    b / a > 0: brighter towards image right; c / a > 0: brighter towards the chin. This is the l <= 1 part of a
    spherical-harmonic shading model with the face taken as a plane: coarse, but it separates side from
    front lighting and ignores identity detail.
    """
    lum = _luminance(image)[0, 0].double()
    w = skin[0, 0].double()
    h, wid = lum.shape
    centre = landmarks.mean(0)
    scale = interocular(landmarks)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(wid, dtype=torch.float64), indexing="ij")
    basis = torch.stack([torch.ones_like(xs), (xs - centre[0]) / scale, (ys - centre[1]) / scale], -1).reshape(-1, 3)
    sw = w.reshape(-1, 1).sqrt()
    coef = torch.linalg.lstsq(basis * sw, lum.reshape(-1, 1) * sw).solution[:, 0].numpy()
    return np.array([coef[0], coef[1] / coef[0], coef[2] / coef[0]])


def lighting_error(image: torch.Tensor, reference: torch.Tensor, skin: torch.Tensor, landmarks: np.ndarray) -> float:
    """Distance between the relative luminance gradients (lighting direction and strength) of two aligned faces."""
    return float(np.linalg.norm(lighting(image, skin, landmarks)[1:] - lighting(reference, skin, landmarks)[1:]))


def high_frequency_ratio(image: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared Laplacian of lightness inside ``mask``, image over reference. > 1: speckle or hatching
    added; < 1: smoother (softer) than the reference."""

    return detail_energy(image, mask) / max(detail_energy(reference, mask), 1e-12)


def histogram_distance(values: torch.Tensor, reference: torch.Tensor) -> float:
    """Earth mover's (1-D Wasserstein-1) distance per channel between two pixel sets (N, C) and (M, C) in [0, 1],
    averaged over channels, in 0-255 units."""
    a, b = values.double().cpu().numpy(), reference.double().cpu().numpy()
    return float(np.mean([wasserstein_distance(a[:, c], b[:, c]) for c in range(a.shape[1])]) * 255)


def border_gradient(image: torch.Tensor, region: torch.Tensor, width: int = 2) -> float:
    """Mean gradient magnitude (0-255 units) on a ring ``width`` pixels either side of the border of
    ``region > 0.5``: hard region edges raise it."""
    from kornia.filters import sobel
    from kornia.morphology import dilation, erosion

    hard = (region > 0.5).float()
    kernel = torch.ones(2 * width + 1, 2 * width + 1)
    ring = (dilation(hard, kernel) - erosion(hard, kernel)) > 0
    magnitude = sobel(image.clamp(0, 1)).norm(dim=1, keepdim=True) * 255
    return float(magnitude[ring].mean())


def spatial_color_distance(image: torch.Tensor, reference: torch.Tensor, region: torch.Tensor,
                           sigma: float = 1.0) -> float:
    """Mean CIELAB Delta-E (CIE76) between ``image`` and ``reference`` (1, 3, H, W) in [0, 1], both blurred by
    ``sigma`` pixels (so sub-pixel misalignment and skin texture weigh little), weighted by ``region``
    (1, 1, H, W): per-location colour distance, unlike ``histogram_distance``, which ignores where colours are."""
    if float(region.sum()) <= 0:
        raise ValueError("empty region")
    a, b = (gaussian_blur(rgb_to_lab(x.clamp(0, 1)), max(sigma, 0.5)) for x in (image, reference))
    return float(((a - b).norm(dim=1, keepdim=True) * region).sum() / region.sum())


def flicker(source_before: np.ndarray, source: np.ndarray, output_before: np.ndarray, output: np.ndarray,
            region: np.ndarray) -> tuple[float, float]:
    """Frame-to-frame change of ``output`` beyond the source's, after motion compensation, and the source's own
    (grey levels 0-255, means over ``region``, (H, W) bool).

    The motion is the source's (DeepFlow optical flow from each pixel of ``source`` to where it was in
    ``source_before``); both frames before are carried by it, and each pixel's change of the output that exceeds the
    source's own change there counts: a face that jitters, swims or changes colour where the source did not.
    DeepFlow, not Farneback: on a head that jumps 20-40 px between frames a 3-level Farneback flow tears the face
    apart, and every method then shows the same large change there (glasses_man.mp4: the source's own change after
    compensation 6.7 grey levels, 1.8 with DeepFlow). Nor the DIS flow the video swap steadies its face along, so
    that the measure does not share the method's motion. Read on the whole frame: on a crop of about 200 px
    DeepFlow's pyramid misses a 24-px jump."""
    grey_before, grey = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (source_before, source))
    flow = np.zeros((*grey.shape, 2), np.float32)
    flow = np.asarray(cv2.optflow.createOptFlow_DeepFlow().calc(grey, grey_before, flow))
    h, w = grey.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]

    def change(before: np.ndarray, now: np.ndarray) -> np.ndarray:
        carried = cv2.remap(before, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.abs(now.astype(np.float32) - carried.astype(np.float32)).mean(2)

    source_change = change(source_before, source)
    excess = np.maximum(change(output_before, output) - source_change, 0)
    return float(excess[region].mean()), float(source_change[region].mean())


def skin_tone_distance(image: torch.Tensor, reference: torch.Tensor, skin: torch.Tensor, sigma: float) -> float:
    """Mean CIELAB Delta-E (CIE76) between the skin tones of ``image`` and ``reference`` (1, 3, H, W) in [0, 1] over
    ``skin`` (1, 1, H, W; the pixels that are skin in both): each one's Lab averaged over the skin within a Gaussian
    of ``sigma`` pixels (normalised by the skin's own weight, so no beard, brow or lip beside it enters), so that
    the tone and its patches are compared, not the skin's grain or the face's features."""
    weight = float(skin.sum())
    if weight <= 0:
        raise ValueError("no skin to compare")

    def tone(x: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(rgb_to_lab(x.clamp(0, 1)) * skin, sigma) / gaussian_blur(skin, sigma).clamp_min(1e-6)

    return float(((tone(image) - tone(reference)).norm(dim=1, keepdim=True) * skin).sum() / weight)
