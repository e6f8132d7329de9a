"""Helpers replaced by a dependency's function keep the old results: each test compares with a copy of the
hand-written version it replaced (a private ``_old_*`` function here). ``quantiles``, kept, is checked against
torch.quantile."""

import numpy as np
import pytest
import torch
from kornia.morphology import dilation
from matplotlib.path import Path as PolyPath
from scipy.spatial.transform import Rotation

from optimswap.eval.metrics import HEAD_MODEL, HEAD_MODEL_POINTS, head_pose, histogram_distance, psnr
from optimswap.face import find_face, frame_matrix, interocular, regions, shape_distance
from optimswap.face import mask as mask_module
from optimswap.face.align import apply_matrix
from optimswap.face.mask import face_mask, polygon_mask
from optimswap.io import read_image
from optimswap.lighting.relight import _grid
from optimswap.losses.histogram import quantiles

PHOTOS = ["identities/jennifer/01.jpg", "identities/tony_blair/01.jpg", "identities/mark/01.jpg",
          "makeup/plain/01.jpg", "makeup/makeup/02.jpg"]


@pytest.fixture(scope="module")
def photo_landmarks(faces) -> list[np.ndarray]:
    return [find_face(read_image(faces / p)).landmarks for p in PHOTOS]


@pytest.fixture(scope="module")
def frame_landmarks(photo_landmarks) -> list[tuple[np.ndarray, int]]:
    """Landmarks in 64 and 256 px frames; frame scale 0.5 puts the face hull over the frame border."""
    return [(apply_matrix(frame_matrix(lm, size, scale), lm), size)
            for lm in photo_landmarks for size in (64, 256) for scale in (1.0, 0.5)]


# --- face.regions.skin_mask: erosion ---

def _old_erosion(mask: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return 1 - dilation(1 - mask, kernel)


def test_skin_mask_erosion_equals_old_one_minus_dilation(frame_landmarks, monkeypatch):
    new = [regions.skin_mask(lm, size) for lm, size in frame_landmarks]
    monkeypatch.setattr(regions, "erosion", _old_erosion)
    old = [regions.skin_mask(lm, size) for lm, size in frame_landmarks]
    for a, b in zip(new, old, strict=True):
        assert torch.equal(a, b)


# --- losses.histogram.quantiles: kept (see its docstring); its Hazen rule is torch.quantile at mapped levels ---

@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_quantiles_are_torch_quantile_at_hazen_positions(n):
    g = torch.Generator().manual_seed(n)
    values = torch.rand(n, 3, generator=g, dtype=torch.float64)
    levels = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(50, generator=g)]).double()
    positions = (levels * n - 0.5).clamp(0, n - 1)
    expected = torch.quantile(values, positions / max(n - 1, 1), dim=0)
    # torch.quantile interpolates with lerp, whose rounding differs from quantiles' in the last bits.
    assert torch.allclose(quantiles(values, levels), expected, rtol=0, atol=1e-15)


# --- eval.metrics.histogram_distance: scipy.stats.wasserstein_distance ---

def _old_histogram_distance(values: torch.Tensor, reference: torch.Tensor, levels: int = 256) -> float:
    q = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels
    return float((quantiles(values.double(), q) - quantiles(reference.double(), q)).abs().mean() * 255)


def test_histogram_distance_equals_old_where_its_quantile_grid_is_exact():
    # With 256 values per set the old 256 quantile levels hit the order statistics exactly, so the old
    # approximation is the exact distance: mean |sorted a - sorted b| per channel.
    g = torch.Generator().manual_seed(0)
    values, reference = torch.rand(256, 3, generator=g) ** 2, torch.rand(256, 3, generator=g)
    assert histogram_distance(values, reference) == pytest.approx(_old_histogram_distance(values, reference), abs=1e-9)


def test_histogram_distance_close_to_old_on_random_sets():
    # Otherwise the old one integrates the quantile functions, linear between order statistics, on a 256-level
    # grid; the new one is the exact distance of the step quantile functions. On sets of 1000-5000 values the
    # two differ by at most ~0.012 (0-255 units; 300 random cases), against distances of ~20-40.
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        n, m = (int(k) for k in torch.randint(1000, 5000, (2,), generator=g))
        values, reference = torch.rand(n, 3, generator=g) ** 2, torch.rand(m, 3, generator=g) * 0.8 + 0.1
        assert histogram_distance(values, reference) == pytest.approx(_old_histogram_distance(values, reference),
                                                                      abs=0.03)


# --- eval.metrics.head_pose: scipy Rotation.as_euler ---

def _old_head_pose(landmarks: np.ndarray) -> np.ndarray:
    image = landmarks[HEAD_MODEL_POINTS] * [1.0, -1.0]
    model = HEAD_MODEL - HEAD_MODEL.mean(0)
    projection, *_ = np.linalg.lstsq(model, image - image.mean(0), rcond=None)
    r1, r2 = projection.T
    r1 = r1 / np.linalg.norm(r1)
    r2 = r2 - r1 * (r1 @ r2)
    r2 = r2 / np.linalg.norm(r2)
    rotation = np.stack([r1, r2, np.cross(r1, r2)])
    yaw = np.degrees(np.arcsin(np.clip(rotation[0, 2], -1, 1)))
    pitch = np.degrees(np.arctan2(-rotation[1, 2], rotation[2, 2]))
    roll = np.degrees(np.arctan2(-rotation[0, 1], rotation[0, 0]))
    return np.array([yaw, pitch, roll])


def test_head_pose_equals_old(photo_landmarks):
    rng = np.random.default_rng(0)
    cases = list(photo_landmarks)
    for yaw, pitch, roll in rng.uniform([-60, -40, -40], [60, 40, 40], (50, 3)):
        rotation = Rotation.from_euler("XYZ", [pitch, yaw, roll], degrees=True).as_matrix()
        landmarks = rng.normal(300, 50, (68, 2))
        landmarks[HEAD_MODEL_POINTS] = (HEAD_MODEL @ rotation.T)[:, :2] * [1.0, -1.0] + 300
        cases.append(landmarks)
    cases += list(rng.normal(0, 100, (50, 68, 2)))
    for landmarks in cases:
        # Same rotation matrix, different trigonometry: agreement to rounding (degrees).
        assert np.allclose(head_pose(landmarks), _old_head_pose(landmarks), rtol=0, atol=1e-9)


# --- eval.metrics.psnr: kornia.metrics.psnr ---

def _old_psnr(image: np.ndarray, reference: np.ndarray, where: np.ndarray | None = None) -> float:
    a, b = image.astype(np.float64), reference.astype(np.float64)
    if where is not None:
        a, b = a[where], b[where]
    if a.size == 0:
        raise ValueError("no pixels to compare")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_psnr_equals_old():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = rng.integers(1, 60, 2)
        reference = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = reference.copy()
        changed = rng.integers(0, image.size, rng.integers(1, 20))
        image.flat[changed] = rng.integers(0, 256, changed.size)
        where = rng.random((h, w)) < 0.5
        for mask in (None, where, ~where):
            if mask is not None and not mask.any():
                continue
            # numpy and torch sum the squared errors in different orders: equal to rounding.
            assert psnr(image, reference, mask) == pytest.approx(_old_psnr(image, reference, mask), rel=1e-12)
    assert psnr(image, image) == _old_psnr(image, image) == float("inf")
    with pytest.raises(ValueError, match="no pixels"):
        psnr(image, reference, np.zeros(image.shape[:2], bool))


# --- face.align.shape_distance: skimage SimilarityTransform ---

def _old_shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    ca, cb = a - a.mean(0), b - b.mean(0)
    u, sv, vt = np.linalg.svd(cb.T @ ca)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, d]) @ vt
    scale = (sv * [1, d]).sum() / (cb**2).sum()
    fitted = scale * cb @ rot
    return float(np.sqrt(((fitted - ca) ** 2).sum(1)).mean() / interocular(a))


def test_shape_distance_equals_old(photo_landmarks):
    rng = np.random.default_rng(0)
    pairs = [(a, b) for a in photo_landmarks for b in photo_landmarks]
    # A mirrored face is best matched by a reflection, which neither version allows.
    pairs += [(a, a * [-1.0, 1.0] + rng.normal(0, 1, a.shape)) for a in photo_landmarks]
    pairs += [tuple(rng.normal(0, 50, (2, 68, 2))) for _ in range(100)]
    for a, b in pairs:
        assert shape_distance(a, b) == pytest.approx(_old_shape_distance(a, b), rel=0, abs=1e-9)


# --- face.mask.polygon_mask: skimage.draw.polygon2mask ---

def _old_polygon_mask(polygon: np.ndarray, size: int) -> torch.Tensor:
    ys, xs = np.mgrid[0:size, 0:size]
    inside = PolyPath(polygon).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(size, size)
    return torch.as_tensor(inside, dtype=torch.float32)[None, None]


# The two can differ on a pixel centre lying exactly on an edge (e.g. polygons with integer vertices); landmarks
# mapped into the frame are never that exact, so the masks of real faces and random float polygons match.

def test_polygon_mask_equals_old_on_random_polygons():
    rng = np.random.default_rng(0)
    for size in (16, 64, 100):
        for _ in range(100):
            n = rng.integers(3, 12)
            if rng.random() < 0.5:  # star-shaped
                angle, radius = np.sort(rng.uniform(0, 2 * np.pi, n)), rng.uniform(2, size / 2, n)
                polygon = size / 2 + np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
            else:  # self-intersecting, partly outside the frame
                polygon = rng.uniform(-5, size + 5, (n, 2))
            assert torch.equal(polygon_mask(polygon, size), _old_polygon_mask(polygon, size))


def test_polygon_mask_equals_old_on_face_regions(frame_landmarks, monkeypatch):
    polygons = []

    def recording_polygon_mask(polygon, size, device="cpu"):
        polygons.append((np.asarray(polygon), size))
        return polygon_mask(polygon, size, device)

    monkeypatch.setattr(mask_module, "polygon_mask", recording_polygon_mask)
    monkeypatch.setattr(regions, "polygon_mask", recording_polygon_mask)
    for landmarks, size in frame_landmarks:
        face_mask(landmarks, size)
        regions.lips_mask(landmarks, size)
        regions.eyes_mask(landmarks, size, 1.0)
        regions.eye_shadow_mask(landmarks, size)
        regions.skin_mask(landmarks, size)
    assert len(polygons) == 17 * len(frame_landmarks)
    for polygon, size in polygons:
        assert torch.equal(polygon_mask(polygon, size), _old_polygon_mask(polygon, size))


# --- lighting.relight._grid: kornia create_meshgrid ---

def _old_grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32, device=device),
                            torch.arange(size, dtype=torch.float32, device=device), indexing="ij")
    return xs, ys


@pytest.mark.parametrize("size", [1, 2, 64, 257])
def test_grid_equals_old(size):
    for new, old in zip(_grid(size, "cpu"), _old_grid(size, "cpu"), strict=True):
        assert new.dtype == old.dtype and torch.equal(new, old)
