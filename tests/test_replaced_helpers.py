"""Helpers replaced by a dependency's function keep the old results: each test compares with a copy of the
hand-written version it replaced (a private ``_old_*`` function here). ``quantiles``, kept, is checked against
torch.quantile."""

import numpy as np
import pytest
import torch
from kornia.morphology import dilation

from optimswap.face import find_face, frame_matrix, regions
from optimswap.face.align import apply_matrix
from optimswap.io import read_image
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
    for a, b in zip(new, old):
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
