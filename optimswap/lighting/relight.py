"""Synthetic relighting of an aligned face, the training data of the lighting classifier (issue #4).

Ratio-image relighting (Shashua & Riklin-Raviv 2001; Wen, Liu & Huang 2003) on a coarse face geometry fitted
to the 68 landmarks:

* geometry: a height field made of an ellipsoid over the face outline (jaw width x chin-to-forehead height,
  as deep as it is half wide), a nose ridge rising from the bridge to the tip, nostril wings, eye sockets and a
  lip bump, sized in eye distances; normals from its gradient;
* the photo's own lighting is estimated (``fit_sh_light``) by a least-squares fit of its skin lightness to the
  first-order spherical-harmonic basis (1, nx, ny, nz) of those normals, i.e. Lambertian skin of constant albedo;
* the new lighting is ambient + Lambertian directional shading; the face is multiplied by
  new shading / estimated shading (each relative to its skin mean), and the whole frame by the light's
  intensity and colour.

Limits (what the generator does not model): cast shadows (the nose casts none, nor does the hair), specular
highlights, light on the hair and neck (only the face hull takes the directional part), albedo variation inside
the skin (beards, makeup and freckles bias the estimate of the photo's own lighting), and anything beyond a
single directional source plus ambient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from kornia.color import rgb_to_grayscale
from kornia.filters import gaussian_blur2d, spatial_gradient
from kornia.geometry import create_meshgrid

from optimswap.face.align import (
    MOUTH,
    NOSE_BRIDGE,
    NOSE_WINGS,
    apply_matrix,
    eye_centres,
    frame_matrix,
    interocular,
    warp_from_frame,
    warp_to_frame,
)
from optimswap.face.mask import face_polygon
from optimswap.face.regions import skin_mask
from optimswap.io import to_numpy, to_tensor
from optimswap.optim import resize_to


@dataclass(frozen=True)
class Light:
    """A directional light plus ambient, with a global intensity and colour."""

    direction: tuple[float, float, float]  # unit; x to image right, y down, z towards the camera
    ambient: float  # share of the shading that does not depend on the normal, in [0, 1]
    intensity: float  # global brightness factor
    colour: tuple[float, float, float]  # per-channel gain, mean 1

    def as_tensor(self) -> torch.Tensor:
        """(8,) direction, ambient, intensity, colour: the batched form ``relight`` takes."""
        return torch.tensor([*self.direction, self.ambient, self.intensity, *self.colour], dtype=torch.float32)


FRONT = Light((0.0, 0.0, 1.0), 0.4, 1.0, (1.0, 1.0, 1.0))


def direction(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """Unit light direction from azimuth (positive: from image right) and elevation (positive: from above)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))


def random_light(rng: np.random.Generator) -> Light:
    """Lights spread over where portrait light comes from: azimuth within +-80 degrees, elevation -30..60."""
    tint = rng.uniform(-0.1, 0.1)  # warm (+) to cool (-)
    colour = np.array([1 + tint, 1.0, 1 - tint]) * np.exp(rng.normal(0, 0.02, 3))
    red, green, blue = (float(c) for c in colour / colour.mean())
    return Light(direction(rng.uniform(-80, 80), rng.uniform(-30, 60)), float(rng.uniform(0.1, 0.6)),
                 float(np.exp(rng.uniform(-0.3, 0.3))), (red, green, blue))


def _bumps(xs: torch.Tensor, ys: torch.Tensor, centres: np.ndarray, heights: np.ndarray, sigma: float) -> torch.Tensor:
    """Max over Gaussian bumps (so overlapping bumps along a ridge do not add up)."""
    c = torch.as_tensor(centres, dtype=xs.dtype, device=xs.device)
    h = torch.as_tensor(heights, dtype=xs.dtype, device=xs.device)
    d2 = (xs[None] - c[:, 0, None, None]) ** 2 + (ys[None] - c[:, 1, None, None]) ** 2
    return (h[:, None, None] * torch.exp(-d2 / (2 * sigma ** 2))).amax(0)


def _grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel x and y coordinates (S, S) of a square frame."""
    xs, ys = create_meshgrid(size, size, normalized_coordinates=False, device=device, dtype=torch.float32)[0].unbind(-1)
    return xs, ys


def _ellipse_radius(landmarks: np.ndarray, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Squared normalized radius of the ellipse spanning the face outline (jaw + forehead), and its half width."""
    outline = face_polygon(landmarks)
    (x0, y0), (x1, y1) = outline.min(0), outline.max(0)
    a, b = (x1 - x0) / 2, (y1 - y0) / 2
    return ((xs - (x0 + x1) / 2) / a) ** 2 + ((ys - (y0 + y1) / 2) / b) ** 2, float(a)


def face_support(landmarks: np.ndarray, size: int, device="cpu") -> torch.Tensor:
    """(1, 1, S, S) where the directional light acts: 1 inside the face ellipse, fading to 0 over its outer
    band (squared radius 0.6 -> 1), so the relit face meets the unchanged hair and background without a seam."""
    r2, _ = _ellipse_radius(landmarks, *_grid(size, device))
    t = ((1 - r2) / 0.4).clamp(0, 1)
    return (t * t * (3 - 2 * t))[None, None]


def face_height(landmarks: np.ndarray, size: int, device="cpu") -> torch.Tensor:
    """(1, 1, S, S) height field of the coarse face, in pixels towards the camera (see the module docstring)."""
    iod = interocular(landmarks)
    xs, ys = _grid(size, device)
    r2, half_width = _ellipse_radius(landmarks, xs, ys)
    height = half_width * torch.sqrt((1 - r2).clamp_min(0))
    bridge = landmarks[NOSE_BRIDGE]
    ridge = np.stack([np.interp(np.linspace(0, 3, 16), np.arange(4), bridge[:, k]) for k in range(2)], 1)
    height = height + _bumps(xs, ys, ridge, np.linspace(0.1, 0.4, 16) * iod, 0.12 * iod)
    height = height + _bumps(xs, ys, landmarks[NOSE_WINGS], np.full(5, 0.15 * iod), 0.12 * iod)
    height = height - _bumps(xs, ys, np.stack(eye_centres(landmarks)), np.full(2, 0.12 * iod), 0.3 * iod)
    height = height + _bumps(xs, ys, landmarks[MOUTH].mean(0, keepdims=True), np.array([0.08 * iod]), 0.25 * iod)
    return height[None, None]


def face_normals(landmarks: np.ndarray, size: int, device="cpu") -> torch.Tensor:
    """(1, 3, S, S) unit normals of ``face_height`` (smoothed over 2 % of the frame so the rim is not a crease)."""
    sigma = max(0.02 * size, 0.5)
    k = int(2 * round(3 * sigma) + 1)
    height = gaussian_blur2d(face_height(landmarks, size, device), (k, k), (sigma, sigma), border_type="replicate")
    grad = spatial_gradient(height, mode="sobel", normalized=True)[:, 0]  # (1, 2, S, S): d/dx, d/dy
    normals = torch.cat([-grad, torch.ones_like(grad[:, :1])], 1)
    return normals / normals.norm(dim=1, keepdim=True)


def lambert_shading(normals: torch.Tensor, lights: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) ambient + (1 - ambient) max(0, n.l) for lights (B, 8) as in ``Light.as_tensor``."""
    cosine = (normals * lights[:, :3, None, None]).sum(1, keepdim=True).clamp_min(0)
    ambient = lights[:, 3, None, None, None]
    return ambient + (1 - ambient) * cosine


def _skin_mean(x: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    return (x * skin).sum((-2, -1), keepdim=True) / skin.sum((-2, -1), keepdim=True).clamp_min(1e-6)


def _sh_basis(normals: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones_like(normals[:, :1]), normals], 1).flatten(2).transpose(1, 2)  # (B, N, 4)


def fit_sh_light(image: torch.Tensor, normals: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """(B, 4) first-order spherical-harmonic lighting of a face: least-squares fit of its skin lightness to
    (1, nx, ny, nz), i.e. Lambertian skin of constant albedo."""
    weight = skin.flatten(2).transpose(1, 2).sqrt().double()
    lum = rgb_to_grayscale(image).flatten(2).transpose(1, 2).double()
    # Solved in float64 and rounded back: a float32 LAPACK solve differed in the last bits between identical
    # calls (memory alignment), which L-BFGS then grew into different swaps from the same seed.
    solution = torch.linalg.lstsq(_sh_basis(normals).double() * weight, lum * weight).solution
    return solution[..., 0].to(image.dtype)


def sh_shading(normals: torch.Tensor, light: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) shading of SH lighting (B or 1, 4) on ``normals``, relative to its skin mean."""
    shading = (_sh_basis(normals) @ light.expand(len(normals), 4)[..., None]).transpose(1, 2).reshape_as(normals[:, :1])
    return (shading / _skin_mean(shading, skin).clamp_min(1e-6)).clamp(0.2, 5.0)


@dataclass
class FaceGeometry:
    """What relighting needs of an aligned face (batched along dim 0)."""

    image: torch.Tensor  # (B, 3, S, S)
    normals: torch.Tensor  # (B, 3, S, S)
    support: torch.Tensor  # (B, 1, S, S) where the directional light acts (face_support)
    skin: torch.Tensor  # (B, 1, S, S)
    light: torch.Tensor  # (B, 4) the photo's own lighting, estimated (fit_sh_light)
    shading: torch.Tensor  # (B, 1, S, S) the shading of that lighting, relative to its skin mean

    @classmethod
    def fit(cls, image: torch.Tensor, landmarks: np.ndarray) -> FaceGeometry:
        size, device = image.shape[-1], image.device
        normals = face_normals(landmarks, size, device)
        support = face_support(landmarks, size, device)
        skin = skin_mask(landmarks, size, device=device)
        light = fit_sh_light(image, normals, skin)
        return cls(image, normals, support, skin, light, sh_shading(normals, light, skin))

    @classmethod
    def from_photo(cls, photo: torch.Tensor, landmarks: np.ndarray, size: int,
                   matrix: np.ndarray | None = None) -> FaceGeometry:
        """``fit`` in the aligned frame of ``size`` px; ``matrix`` (photo -> frame) defaults to the standard one."""
        matrix = frame_matrix(landmarks, size) if matrix is None else matrix
        return cls.fit(warp_to_frame(photo, matrix, size), apply_matrix(matrix, landmarks))

    def flip(self) -> FaceGeometry:
        """The mirror image (the x component of the normals changes sign)."""
        sign = torch.tensor([1.0, -1.0, 1.0, 1.0], device=self.normals.device)  # (1, nx, ny, nz): nx changes sign
        normals = self.normals.flip(-1) * sign[1:, None, None]
        return FaceGeometry(self.image.flip(-1), normals, self.support.flip(-1), self.skin.flip(-1), self.light * sign,
                            self.shading.flip(-1))

    def resized(self, size: int) -> FaceGeometry:
        """All maps antialias-resized (normals renormalized), as a frame is before it enters the network."""
        maps = {k: v if k == "light" else resize_to(v, size) for k, v in vars(self).items()}
        maps["normals"] = maps["normals"] / maps["normals"].norm(dim=1, keepdim=True).clamp_min(1e-6)
        return FaceGeometry(**maps)

    def __getitem__(self, index) -> FaceGeometry:
        return FaceGeometry(*(t[index] for t in vars(self).values()))

    @staticmethod
    def cat(parts: list[FaceGeometry]) -> FaceGeometry:
        return FaceGeometry(*(torch.cat(ts) for ts in zip(*(vars(p).values() for p in parts), strict=True)))


def relative_shading(geometry: FaceGeometry, lights: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) the new shading relative to its skin mean."""
    new = lambert_shading(geometry.normals, lights)
    return new / _skin_mean(new, geometry.skin).clamp_min(1e-6)


def _reshade(geometry: FaceGeometry, shading: torch.Tensor) -> torch.Tensor:
    """The ratio image: the face's own estimated shading divided out and ``shading`` (relative) put in, fading
    to the unchanged image outside the support. Not clamped."""
    return geometry.image * (1 + geometry.support * (shading / geometry.shading - 1))


def relight(geometry: FaceGeometry, lights: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) the faces under ``lights`` (B, 8), see the module docstring."""
    gain = lights[:, 4, None, None, None] * lights[:, 5:8, None, None]
    return (_reshade(geometry, relative_shading(geometry, lights)) * gain).clamp(0, 1)


def transfer_lighting(geometry: FaceGeometry, light: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) the faces re-shaded to SH lighting ``light`` (1 or B, 4) estimated on another face
    (``fit_sh_light``)."""
    return _reshade(geometry, sh_shading(geometry.normals, light, geometry.skin)).clamp(0, 1)


def lighting_change(geometry: FaceGeometry, lights_a: torch.Tensor, lights_b: torch.Tensor) -> torch.Tensor:
    """(B,) how differently two lights shade a face: mean |log ratio| of their relative shadings over the skin.
    Intensity and colour are left out: across photos they mix with exposure, white balance and skin tone."""
    ratio = relative_shading(geometry, lights_a) / relative_shading(geometry, lights_b)
    return _skin_mean(torch.log(ratio).abs(), geometry.skin).flatten()


def relight_photo(photo: np.ndarray, landmarks: np.ndarray, light: Light, size: int = 512) -> np.ndarray:
    """A whole photo (H, W, 3) uint8 with its face relit: relit in an aligned frame of ``size`` px, and the change
    carried back into the photo (so the photo keeps its own resolution outside the change)."""
    image = to_tensor(photo)
    matrix = frame_matrix(landmarks, size)
    geometry = FaceGeometry.from_photo(image, landmarks, size, matrix)
    change = warp_from_frame(relight(geometry, light.as_tensor()[None]) - geometry.image, matrix, *photo.shape[:2])
    return to_numpy((image + change).clamp(0, 1))
