import numpy as np
import pytest
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

from optimswap.eval import skin_tone_distance
from optimswap.face import find_face, frame_matrix, warp_to_frame
from optimswap.face.align import apply_matrix, interocular
from optimswap.face.mask import polygon_mask
from optimswap.face.regions import skin_mask
from optimswap.face.skin import clean_skin, skin_likelihood, upper_skin_mask
from optimswap.io import to_tensor

SIZE = 128


@pytest.fixture(scope="module")
def aligned(jennifer):
    """jennifer/01 in a 128 px aligned frame and its landmarks."""
    face = find_face(jennifer)
    matrix = frame_matrix(face.landmarks, SIZE)
    return warp_to_frame(to_tensor(jennifer), matrix, SIZE), apply_matrix(matrix, face.landmarks)


def chin_patch(landmarks: np.ndarray) -> torch.Tensor:
    """(1, 1, S, S) hard: below the mouth down to the chin, where a beard grows."""
    jaw = landmarks[4:13]
    return polygon_mask(np.concatenate([jaw, landmarks[[54, 57, 48]]]), SIZE)


def with_beard(image: torch.Tensor, where: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``image`` with a dark, grey, textured patch (hair-like noise) where ``where`` is 1."""
    noise = torch.rand(1, 1, *image.shape[-2:], generator=torch.Generator().manual_seed(seed))
    hair = (0.12 + 0.15 * noise).expand_as(image)
    return image + where * (hair - image)


def shifted(image: torch.Tensor, region: torch.Tensor, shift: tuple[float, float, float]) -> torch.Tensor:
    lab = rgb_to_lab(image) + torch.tensor(shift).view(1, 3, 1, 1) * region
    return lab_to_rgb(lab).clamp(0, 1)


def test_skin_likelihood_finds_the_face_skin_and_drops_a_planted_beard(aligned):
    image, landmarks = aligned
    beard = chin_patch(landmarks)
    bearded = with_beard(image, beard)
    likely = skin_likelihood(bearded, upper_skin_mask(landmarks, SIZE))
    cheeks = upper_skin_mask(landmarks, SIZE) > 0.5
    assert likely[beard > 0.5].mean() < 0.05  # the beard is not skin
    assert likely[cheeks].mean() > 0.8  # the clean skin is
    with pytest.raises(ValueError, match="empty"):
        skin_likelihood(image, torch.zeros(1, 1, SIZE, SIZE))


def test_clean_skin_is_skin_in_every_image(aligned):
    image, landmarks = aligned
    beard = chin_patch(landmarks)
    both = clean_skin([image, with_beard(image, beard)], landmarks, SIZE)
    alone = clean_skin([image], landmarks, SIZE)
    chin = beard > 0.5
    landmark_skin = skin_mask(landmarks, SIZE)[chin].mean()
    assert alone[chin].mean() > 0.8 * landmark_skin  # clean, the chin is skin
    assert both[chin].mean() < 0.05 * landmark_skin  # bearded in one of them, it is not
    assert torch.all(both <= skin_mask(landmarks, SIZE) + 1e-6)


def test_tone_metric_reads_a_planted_colour_shift_and_not_a_beard(aligned):
    image, landmarks = aligned
    skin = clean_skin([image], landmarks, SIZE)
    sigma = 0.1 * interocular(landmarks)
    assert skin_tone_distance(image, image, skin, sigma) == 0
    # Delta-E 5 planted on the whole face (a greyer, paler skin) is read as 5.
    face = skin_mask(landmarks, SIZE, feather=0.0)
    assert skin_tone_distance(shifted(image, face, (3.0, 0.0, -4.0)), image, skin, sigma) == pytest.approx(5, abs=0.4)
    # Only on the left half of the skin: half of it (patchy skin is read where it is).
    left = torch.zeros_like(face)
    left[..., : int(landmarks[27, 0])] = 1
    half = skin_tone_distance(shifted(image, face * left, (3.0, 0.0, -4.0)), image, skin, sigma)
    assert 1.5 < half < 3.5
    # A beard in the output where the source has skin: not skin in both, so not a tone change.
    bearded = with_beard(image, chin_patch(landmarks))
    both = clean_skin([bearded, image], landmarks, SIZE)
    assert skin_tone_distance(bearded, image, both, sigma) < 0.5
    assert skin_tone_distance(bearded, image, skin, sigma) > 5  # over the landmark skin alone it would be
    with pytest.raises(ValueError, match="no skin"):
        skin_tone_distance(image, image, torch.zeros_like(skin), sigma)
