import numpy as np
import pytest
import torch

from optimswap.face import (
    detect_faces,
    face_mask,
    find_face,
    frame_matrix,
    interocular,
    shape_distance,
    tps_warp,
    warp_from_frame,
    warp_to_frame,
)
from optimswap.face.align import apply_matrix
from optimswap.io import ImageError, to_numpy, to_tensor


def test_landmarks_on_real_photo(jennifer):
    face = find_face(jennifer)
    assert face.landmarks.shape == (68, 2)
    x0, y0, x1, y1 = face.box
    inner = face.landmarks[17:]
    assert (inner[:, 0] > x0).all() and (inner[:, 0] < x1).all()
    assert (inner[:, 1] > y0).all() and (inner[:, 1] < y1).all()


def test_no_face_and_bad_index_are_clear_errors(jennifer):
    with pytest.raises(ImageError, match="no face"):
        find_face(np.full((200, 200, 3), 127, np.uint8), name="blank")
    with pytest.raises(ImageError, match="face index 3"):
        find_face(jennifer, face_index=3)
    with pytest.raises(ValueError):
        detect_faces(np.zeros((10, 10), np.uint8))


def test_several_faces_largest_first(jennifer, faces):
    from optimswap.io import read_image

    other = read_image(faces / "identities" / "tony_blair" / "01.jpg")  # a smaller face
    canvas = np.full((1024, 1100, 3), 200, np.uint8)
    canvas[:, :768] = jennifer
    canvas[300:550, 820:1070] = other
    found = detect_faces(canvas)
    assert len(found) == 2
    assert found[0].area > found[1].area and found[0].box[0] < 768 <= found[1].box[0]


def test_frame_round_trip_and_landmarks(jennifer):
    face = find_face(jennifer)
    size = 256
    matrix = frame_matrix(face.landmarks, size)
    photo = to_tensor(jennifer)
    frame = warp_to_frame(photo, matrix, size)
    # Landmarks found again in the frame agree with the mapped ones.
    again = find_face(to_numpy(frame)).landmarks
    mapped = apply_matrix(matrix, face.landmarks)
    assert np.linalg.norm(again - mapped, axis=1).mean() < 0.05 * interocular(mapped)
    # Frame -> photo -> frame is the identity inside the face (bilinear resampling twice).
    back = warp_from_frame(frame, matrix, *jennifer.shape[:2])
    frame2 = warp_to_frame(back, matrix, size)
    centre = (slice(64, 192), slice(64, 192))
    assert (frame2[..., centre[0], centre[1]] - frame[..., centre[0], centre[1]]).abs().mean() < 0.02


def test_tps_moves_points_onto_targets():
    size = 96
    rng = np.random.default_rng(0)
    src = rng.uniform(20, 76, (1, 68, 2))
    # A smooth displacement (no folds): a few pixels, varying across the frame.
    dst = src[0] + 3.0 * np.stack([np.sin(src[0, :, 1] / 15), np.cos(src[0, :, 0] / 15)], 1)
    image = torch.zeros(1, 1, size, size)
    for i in (5, 30, 50):  # plant dots at three landmarks
        image[0, 0, int(round(src[0, i, 1])), int(round(src[0, i, 0]))] = 1.0
    warped = tps_warp(image, src, dst)
    for i in (5, 30, 50):
        y, x = int(round(dst[i, 1])), int(round(dst[i, 0]))
        patch = warped[0, 0, y - 2 : y + 3, x - 2 : x + 3]
        assert patch.sum() > 0.5  # the dot arrived within 2 px


def test_mask_covers_landmarks_and_not_corners(jennifer):
    face = find_face(jennifer)
    size = 128
    lm = apply_matrix(frame_matrix(face.landmarks, size), face.landmarks)
    mask = face_mask(lm, size)[0, 0]
    values = mask[lm[:, 1].round().astype(int), lm[:, 0].round().astype(int)]
    assert (values >= 0.5).all()
    assert (values[27:] > 0.95).all()  # nose, eyes, mouth well inside; brow ends lie near the outline
    assert mask[:5, :5].max() == 0 and mask[-5:, -5:].max() == 0
    assert mask.min() >= 0 and mask.max() <= 1


def test_shape_distance_is_similarity_invariant(jennifer):
    lm = find_face(jennifer).landmarks
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 1.7 * lm @ rot.T + np.array([40.0, -13.0])
    assert shape_distance(lm, moved) < 1e-6
    bent = lm.copy()
    bent[48:68] += np.array([0.0, 0.2 * interocular(lm)])  # mouth moved down
    assert shape_distance(lm, bent) > 0.02
