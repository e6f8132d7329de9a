import cv2
import numpy as np
import pytest

from optimswap.compose.classic import choose_target, classic_swap, face_points, face_triangles, piecewise_affine_warp
from optimswap.face import find_face, interocular, shape_distance
from optimswap.io import read_image

MOUTH_OPENING = slice(60, 68)  # inner-lip polygon


@pytest.fixture(scope="module")
def pair(faces, jennifer):
    """jennifer/01 as the source, the angelina folder as the targets (photos and landmarks)."""
    photos = [read_image(p) for p in sorted((faces / "identities" / "angelina").glob("*.jpg"))]
    return jennifer, find_face(jennifer).landmarks, photos, [find_face(p).landmarks for p in photos]


@pytest.fixture(scope="module")
def swapped(pair):
    source, landmarks, photos, target_landmarks = pair
    return classic_swap(source, landmarks, photos, target_landmarks)


def dots(shape, points, sigma=1.5):
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape, np.float32)
    for x, y in points:
        image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return image


def dot_errors(noise):
    """Dots at perturbed-similarity images of grid points, warped back: distance of each dot's centroid to its point."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(60, 300, 40), np.arange(60, 300, 40)), -1).reshape(-1, 2).astype(float)
    points_to = grid + rng.uniform(-8, 8, grid.shape)
    angle, scale = 0.3, 0.9
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def similarity(p):  # about the output's centre, onto the middle of a 520 x 540 input
        return (p - 180) @ rotation.T + [270, 260]

    points_from = similarity(points_to) + rng.uniform(-noise, noise, points_to.shape)
    frame = np.array([[0, 0], [359, 0], [359, 359], [0, 359], [180, 0], [359, 180], [180, 359], [0, 180]], float)
    warped, defined = piecewise_affine_warp(dots((520, 540), points_from),
                                            np.concatenate([points_from, similarity(frame)]),
                                            np.concatenate([points_to, frame]), (360, 360))
    assert warped.shape == (360, 360) and defined.all()
    errors = []
    for x, y in points_to:
        x0, y0 = round(x) - 4, round(y) - 4
        window = warped[y0:y0 + 9, x0:x0 + 9]
        assert window.max() > 0.5  # the dot is there
        wy, wx = np.mgrid[y0:y0 + 9, x0:x0 + 9]
        errors.append(np.hypot((wx * window).sum() / window.sum() - x, (wy * window).sum() / window.sum() - y))
    return np.array(errors)


def test_warp_carries_dots_onto_points():
    assert dot_errors(noise=0).max() < 0.1  # one similarity: exact up to resampling (measured 0.044 px)
    # each triangle its own affine map: a dot on a vertex is bent, its centroid moves a little (measured max 0.79 px)
    assert dot_errors(noise=5).max() < 1.0


def test_closed_source_mouth_shows_no_target_mouth_opening(jennifer):
    """Inner lips that coincide on the source: the open mouth of the target must vanish, not spill onto the lips."""
    landmarks = find_face(jennifer).landmarks
    closed = landmarks.copy()
    closed[[67, 66, 65]] = closed[[61, 62, 63]]
    opened = landmarks.copy()
    opened[[55, 56, 57, 58, 59, 65, 66, 67]] += [0, 0.25 * interocular(landmarks)]  # lower lip down
    target = np.full(jennifer.shape[:2], 100, np.uint8)
    cv2.fillPoly(target, [np.round(opened[MOUTH_OPENING]).astype(np.int32)], 255)
    warped, defined = piecewise_affine_warp(target, face_points(opened), face_points(closed), target.shape,
                                            face_triangles(closed))
    lips = cv2.fillPoly(np.zeros_like(target), [np.round(closed[48:60]).astype(np.int32)], 1).astype(bool)
    assert defined[lips].all()
    mouth_width = closed[54, 0] - closed[48, 0]
    assert (target == 255).sum() > 20 * mouth_width  # a wide-open target mouth (3730 px)...
    assert (warped > 200).sum() < mouth_width  # ...gives at most a one-pixel line along the closed lips (117 px)


def test_choose_target_prefers_similar_shape(jennifer):
    source = find_face(jennifer).landmarks
    angle = 0.4
    rotation = 1.7 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = source @ rotation.T + [250.0, -90.0]
    perturbed = source + np.random.default_rng(1).normal(0, 0.03 * interocular(source), source.shape)
    assert choose_target(source, [perturbed, moved]) == 1
    assert choose_target(source, [moved, perturbed]) == 0
    slightly = source + np.random.default_rng(2).normal(0, 0.01 * interocular(source), source.shape)
    assert choose_target(source, [perturbed, slightly]) == 1


def test_real_swap_lands_on_source_landmarks(pair, swapped):
    source, landmarks, _, target_landmarks = pair
    result, info = swapped
    assert result.shape == source.shape and result.dtype == np.uint8
    chosen = target_landmarks[info["index"]]
    assert info["index"] == int(np.argmin(info["shape_distances"]))
    found = find_face(result).landmarks
    nme = np.linalg.norm(found - landmarks, axis=1).mean() / interocular(landmarks)
    assert nme < 0.04  # measured 0.021
    # the warp brought the target's face shape to the source's: closer than the unwarped target's landmarks
    assert shape_distance(landmarks, found) < 0.75 * shape_distance(landmarks, chosen)  # measured 0.017 vs 0.045
    mask = info["mask"]
    assert np.abs(result[mask].astype(int) - source[mask]).mean() > 8  # the face did change


def test_outside_mask_and_keep_are_bit_identical(pair):
    source, landmarks, photos, target_landmarks = pair
    keep = np.zeros(source.shape[:2], np.float32)
    cx, cy = landmarks[30].round().astype(int)
    cv2.circle(keep, (int(cx + 0.6 * interocular(landmarks)), int(cy)), 40, 0.7, -1)  # a cheek occluder
    keep[int(landmarks[19, 1]) - 60: int(landmarks[19, 1]) - 20] = 1.0  # a band across the forehead border
    result, info = classic_swap(source, landmarks, photos, target_landmarks, keep=keep)
    mask, kept = info["mask"], keep > 0
    assert mask.sum() > 50_000 and not (mask & kept).any()
    assert np.array_equal(result[~mask], source[~mask]) and np.array_equal(result[kept], source[kept])


def test_a_target_occluder_is_not_pasted(pair):
    """A band marked as occluder on the chosen target photo (its own hair, say) leaves the source there."""
    source, landmarks, photos, target_landmarks = pair
    _, plain = classic_swap(source, landmarks, photos, target_landmarks)
    index = plain["index"]
    target_keep = [np.zeros(p.shape[:2], np.float32) for p in photos]
    lm = target_landmarks[index]
    band = slice(int(lm[29, 1]), int(lm[33, 1]))  # across the cheeks at nose height
    target_keep[index][band] = 1.0
    result, info = classic_swap(source, landmarks, photos, target_landmarks, target_keep=target_keep)
    lost = plain["mask"] & ~info["mask"]
    assert lost.sum() > 0.1 * plain["mask"].sum()  # the band's image in the source is out of the clone mask ...
    rows = np.nonzero(lost.any(1))[0]
    assert landmarks[29, 1] - 5 < np.median(rows) < landmarks[33, 1] + 5  # ... at the same facial place
    assert np.array_equal(result[lost], source[lost])


def test_mask_reaching_the_photo_border(pair):
    source, landmarks, photos, target_landmarks = pair
    left = int(landmarks[:, 0].min() + 0.3 * interocular(landmarks))  # cut through the left cheek
    cropped = np.ascontiguousarray(source[:, left:])
    result, info = classic_swap(cropped, landmarks - [left, 0], photos, target_landmarks)
    mask = info["mask"]
    assert mask[:, 0].any()
    assert np.array_equal(result[~mask], cropped[~mask])
    assert (result[mask[:, 0], 0] != cropped[mask[:, 0], 0]).any()  # the clone reached the edge column


def test_shape_checks(pair):
    source, landmarks, photos, target_landmarks = pair
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        classic_swap(source, landmarks[:67], photos, target_landmarks)
    with pytest.raises(ValueError, match="candidate 1"):
        classic_swap(source, landmarks, photos[:2], [target_landmarks[0], target_landmarks[1][:, :1]])
    with pytest.raises(ValueError, match="2 target photos but 3"):
        classic_swap(source, landmarks, photos[:2], target_landmarks[:3])
    with pytest.raises(ValueError, match="keep"):
        classic_swap(source, landmarks, photos, target_landmarks, keep=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="uint8"):
        classic_swap(source.astype(np.float32), landmarks, photos, target_landmarks)
    with pytest.raises(ValueError, match="no candidate"):
        choose_target(landmarks, [])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        piecewise_affine_warp(source, landmarks, landmarks[:60], source.shape[:2])


def test_forehead_sets_how_high_the_clone_reaches(pair, swapped):
    source, landmarks, photos, target_landmarks = pair
    _, low = swapped
    result, high = classic_swap(source, landmarks, photos, target_landmarks, forehead=0.6)
    assert (high["mask"] | ~low["mask"]).all()  # it only adds, at the top

    def top(mask):
        return np.nonzero(mask.any(1))[0][0]

    lift = 0.3 * (landmarks[31, 1] - landmarks[27, 1])  # the extra 0.3 nose-bridge lengths, upright face
    assert abs(top(low["mask"]) - top(high["mask"]) - lift) < 0.15 * lift
    added = high["mask"] & ~low["mask"]
    assert np.abs(result[added].astype(int) - source[added]).mean() > 4  # the target's forehead came with it
