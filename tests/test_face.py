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
from optimswap.face.align import TPS_POINTS, apply_matrix, opening_distance, openings, with_expression
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


def test_tps_lands_each_point_within_a_pixel():
    # An image of its own coordinates: the warped image read at a target point must hold the source point's place.
    # A spline evaluated with the wrong kernel centres lands such a 6-px move several pixels off.
    size = 128
    rng = np.random.default_rng(1)
    src = rng.uniform(30, 98, (1, 68, 2))
    dst = src[0] + 6.0 * np.stack([np.sin(src[0, :, 1] / 15), np.cos(src[0, :, 0] / 15)], 1)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    warped = tps_warp(torch.stack([xs, ys])[None], src, dst)
    at = torch.as_tensor((2 * dst[TPS_POINTS] + 1) / size - 1, dtype=torch.float32)[None, None]
    read = torch.nn.functional.grid_sample(warped, at, align_corners=False)[0, :, 0].T.numpy()
    assert np.linalg.norm(read - src[0, TPS_POINTS], axis=1).max() < 0.5


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


def test_opening_distance_sees_a_closed_eye_and_mouth_that_the_shape_distance_hardly_sees(jennifer):
    """Both eyes planted shut (upper lids onto the lower) and the lips parted by a tenth of the eye distance: the
    openings' distance is the gaps closed and opened, a similarity changes nothing, and the whole-face shape
    distance moves far less."""
    lm = find_face(jennifer).landmarks.astype(np.float64)
    eye = interocular(lm)
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert opening_distance(lm, 1.7 * lm @ rot.T + np.array([40.0, -13.0])) < 1e-9
    shut = lm.copy()
    for upper, lower in (((37, 38), (41, 40)), ((43, 44), (47, 46))):
        shut[list(upper)] = lm[list(lower)]
    shut[[65, 66, 67]] += np.array([0.0, 0.1 * eye])
    eye_gaps = [np.linalg.norm(lm[[37, 38]] - lm[[41, 40]], axis=1).mean(),
                np.linalg.norm(lm[[43, 44]] - lm[[47, 46]], axis=1).mean()]
    mouth_change = abs(openings(shut)[2] - openings(lm)[2])
    assert opening_distance(lm, shut) == pytest.approx((sum(eye_gaps) / eye + mouth_change) / 3, rel=1e-6)
    assert 0.05 < mouth_change <= 0.1 + 1e-9
    assert opening_distance(lm, shut) > 2 * shape_distance(lm, shut)


def test_with_expression_takes_a_planted_raised_brow_and_open_mouth_and_keeps_the_face_shape(jennifer):
    """A target face (the source's, turned, scaled, with a wider jaw and a lower brow) takes the source's raised
    brows and open mouth at strength 1, half of them at 0.5, none at 0; its jaw line and nose never move, and a face
    that only differs from the source by a similarity (same expression) is left as it is."""
    source = find_face(jennifer).landmarks.astype(np.float64)
    eye = interocular(source)
    angle, scale, shift = 0.2, 0.8, np.array([30.0, -10.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def similar(points):
        return scale * points @ rot.T + shift

    assert np.abs(with_expression(similar(source), source, 1.0) - similar(source)).max() < 1e-6
    neutral = source.copy()
    neutral[17:27, 1] += 0.12 * eye  # the target's brows lower, its mouth closed: the source raised and opened them
    neutral[56:59, 1] -= 0.1 * eye
    neutral[65:68, 1] -= 0.1 * eye
    centre = neutral[0:17].mean(0)
    neutral[0:17] = centre + (neutral[0:17] - centre) * [1.1, 1.0]  # a wider jaw: the target's own face shape
    target = similar(neutral)
    goal = with_expression(target, source, 1.0)
    assert np.array_equal(goal[0:17], target[0:17]) and np.array_equal(goal[27:36], target[27:36])
    # The brows' height over the eyes and the mouth's opening are the source's, in the target's units.
    up = rot @ np.array([0.0, -1.0])  # the target face's "up"

    def brow_height(points, side):
        brow, eye_points = (slice(17, 22), slice(36, 42)) if side == 0 else (slice(22, 27), slice(42, 48))
        return float((points[brow].mean(0) - points[eye_points].mean(0)) @ up)

    # The similarity fitted on the jaw and nose scales the source's expression by the wider jaw's ~6 %.
    for side in (0, 1):
        wanted = brow_height(similar(source), side)
        assert brow_height(target, side) < wanted - 0.09 * eye * scale
        assert abs(brow_height(goal, side) / wanted - 1) < 0.08

    def opening(points):
        return float((points[[56, 57, 58]] - points[[52, 51, 50]]).mean(0) @ -up)

    assert abs(opening(goal) / opening(similar(source)) - 1) < 0.08
    assert opening(target) < opening(similar(source)) - 0.08 * eye * scale
    half = with_expression(target, source, 0.5)
    assert np.allclose(half, (target + goal) / 2)
    assert np.array_equal(with_expression(target, source, 0.0), target)
    batch = with_expression(np.stack([target, similar(source)]), source, 1.0)
    assert np.allclose(batch[0], goal) and batch.shape == (2, 68, 2)
