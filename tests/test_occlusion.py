from types import SimpleNamespace

import numpy as np
import pytest
from polygons import inside
from scipy import ndimage
from scipy.spatial import ConvexHull

from optimswap.face import Face, find_face, interocular, occlusion
from optimswap.face.mask import face_polygon
from optimswap.face.occlusion import occlusion_mask
from optimswap.io import read_image

PEOPLE = ["jennifer", "mark", "tony_blair", "angelina", "deepface_id29"]


@pytest.fixture(scope="module")
def portraits(faces) -> dict[str, tuple[np.ndarray, Face]]:
    """Each person's 01 photo with its dlib face."""
    photos = {p: read_image(faces / "identities" / p / "01.jpg") for p in PEOPLE}
    return {p: (photo, find_face(photo)) for p, photo in photos.items()}


def _ellipse(shape, centre, axes, angle) -> np.ndarray:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xs - centre[0]) * c + (ys - centre[1]) * s, -(xs - centre[0]) * s + (ys - centre[1]) * c
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1


def plant_bar(photo: np.ndarray, landmarks: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bar of random non-skin stripes from outside the face over the left temple and cheek; (photo, bar mask)."""
    eye_distance = interocular(landmarks)
    start = landmarks[0] - [0.4 * eye_distance, 0.2 * eye_distance]  # outside the jaw at eye height
    direction = landmarks[31] - [0.25 * eye_distance, -0.05 * eye_distance] - start
    along = direction / np.linalg.norm(direction)
    across = np.array([-along[1], along[0]]) * 0.22 * eye_distance
    end = start + along * np.linalg.norm(direction)
    bar = inside(np.array([start - across, end - across, end + across, start + across]), photo.shape[:2])
    palette = np.array([[20, 20, 25], [235, 235, 240], [30, 60, 200], [40, 160, 60], [150, 40, 160], [250, 215, 30]])
    rng = np.random.default_rng(seed)
    stripes = palette[rng.integers(0, len(palette), 64)]
    ys, xs = np.nonzero(bar)
    position = ((xs - start[0]) * along[0] + (ys - start[1]) * along[1]) / (0.08 * eye_distance)
    out = photo.copy()
    out[ys, xs] = stripes[position.astype(int) % 64]
    return out, bar


def plant_hand(photo: np.ndarray, landmarks: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark hand-shaped patch (palm and four fingers) on the right cheek, coming in over the jaw; (photo, mask)."""
    eye_distance = interocular(landmarks)
    shape = photo.shape[:2]
    palm_centre = landmarks[12] + [0.05 * eye_distance, 0.25 * eye_distance]
    hand = _ellipse(shape, palm_centre, (0.45 * eye_distance, 0.35 * eye_distance), -0.5)
    for k in range(4):  # fingers fanning up and inwards over the cheek
        angle = -2.2 + 0.22 * k
        tip = palm_centre + 0.75 * eye_distance * np.array([np.cos(angle), np.sin(angle)])
        hand |= _ellipse(shape, (palm_centre + tip) / 2, (0.42 * eye_distance, 0.09 * eye_distance), angle)
    rng = np.random.default_rng(seed)
    out = photo.copy()
    noise = rng.normal(0, 8, (hand.sum(), 3))
    out[hand] = np.clip(np.array([75, 52, 45]) + noise, 0, 255).astype(np.uint8)
    return out, hand


def _discs(centres, radius: float, shape) -> np.ndarray:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.any([(xs - x) ** 2 + (ys - y) ** 2 <= radius**2 for x, y in centres], axis=0)


def _skin(landmarks: np.ndarray, shape) -> np.ndarray:
    """Discs of plain skin placed from the landmarks: both cheeks, the nose bridge, the chin."""
    centres = [0.55 * landmarks[2] + 0.45 * landmarks[31], 0.55 * landmarks[14] + 0.45 * landmarks[35],
               landmarks[29], (landmarks[8] + landmarks[57]) / 2]
    return _discs(centres, 0.12 * interocular(landmarks), shape)


def _inner_face(landmarks: np.ndarray, shape) -> np.ndarray:
    """Convex hull of the eyes, nose and mouth landmarks."""
    points = landmarks[27:68]
    return inside(points[ConvexHull(points).vertices], shape)


@pytest.mark.parametrize("plant", [plant_bar, plant_hand])
@pytest.mark.parametrize("person", ["jennifer", "mark"])
def test_planted_occluder_is_masked_and_skin_is_not(portraits, person, plant):
    photo, face = portraits[person]
    planted_photo, planted = plant(photo, face.landmarks)
    mask = occlusion_mask(planted_photo, face, hands=False)
    in_face = planted & inside(face_polygon(face.landmarks), photo.shape[:2])
    # Measured 0.98-1.00 here. On all 45 photos: bar >= 0.95; hand >= 0.90 on 41 (the misses: a brown patch on dark
    # or side-lit skin, fingers over the lips, which are never masked).
    assert (mask[in_face] > 0.5).mean() >= 0.9
    # Skin a little away from the occluder (the mask also closes the gaps between fingers) stays unmasked.
    near = ndimage.distance_transform_edt(~planted) <= 0.1 * interocular(face.landmarks)
    skin = _skin(face.landmarks, photo.shape[:2]) & ~near
    assert (mask[skin] <= 0.5).mean() >= 0.95


@pytest.mark.parametrize("person", PEOPLE)
def test_unoccluded_face_is_left_alone(portraits, person):
    photo, face = portraits[person]
    mask = occlusion_mask(photo, face)  # with MediaPipe's hand detector: no hands here
    assert mask.shape == photo.shape[:2] and mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    assert (mask[_inner_face(face.landmarks, photo.shape[:2])] > 0.5).mean() < 0.05  # measured 0 on all 45 photos
    assert (mask[_skin(face.landmarks, photo.shape[:2])] <= 0.5).mean() >= 0.95  # measured >= 0.97
    if person != "jennifer":  # her hair falls over the face; see the next test
        assert (mask[inside(face_polygon(face.landmarks), photo.shape[:2])] > 0.5).mean() < 0.02  # measured 0


def test_hair_over_the_temples_is_masked(portraits):
    photo, face = portraits["jennifer"]
    lm = face.landmarks
    mask = occlusion_mask(photo, face, hands=False) > 0.5
    ys, xs = np.mgrid[0 : photo.shape[0], 0 : photo.shape[1]]
    above_mouth = inside(face_polygon(lm), photo.shape[:2]) & (ys < lm[48, 1])
    # Beside the outer eye corners her strands cover about half the face (measured: left 0.55, right 0.35).
    assert mask[above_mouth & (xs < lm[36, 0])].mean() > 0.2
    assert mask[above_mouth & (xs > lm[45, 0])].mean() > 0.2


def plant_strands(photo: np.ndarray, landmarks: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Thin strands along the left outline between eye and mouth height, in the skin's own hue (blond), alternately
    lighter and darker than it: (photo, strands mask)."""
    eye_distance = interocular(landmarks)
    shape = photo.shape[:2]
    outline = inside(face_polygon(landmarks), shape)
    depth = ndimage.distance_transform_edt(outline)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    beside = (xs < landmarks[36, 0]) & (ys > landmarks[36, 1]) & (ys < landmarks[48, 1])
    strands = outline & beside & (depth > 0.04 * eye_distance) & (depth < 0.14 * eye_distance)
    gain = np.where((depth / (0.025 * eye_distance)).astype(int) % 2 == 0, 1.35, 0.75)[strands]
    noise = np.random.default_rng(seed).normal(0, 4, (strands.sum(), 3))
    out = photo.astype(np.float64)
    out[strands] = out[strands] * gain[:, None] + noise
    return np.clip(out, 0, 255).astype(np.uint8), strands


@pytest.mark.parametrize("person", ["angelina", "deepface_id29"])
def test_outline_strands_catches_thin_skin_coloured_strands(portraits, person):
    photo, face = portraits[person]
    planted_photo, strands = plant_strands(photo, face.landmarks)
    plain = occlusion_mask(planted_photo, face, hands=False) > 0.5
    with_strands = occlusion_mask(planted_photo, face, hands=False, outline_strands=True) > 0.5
    # Too thin for the speckle opening and too close to the skin's colour: the plain mask misses them (measured 0).
    assert plain[strands].mean() < 0.2
    assert with_strands[strands].mean() > 0.9  # measured 1.0
    assert not with_strands[_inner_face(face.landmarks, photo.shape[:2])].any()
    assert (with_strands | ~plain).all()  # it only adds


def test_outline_strands_finds_a_blond_strand_beside_the_cheek(faces):
    photo = read_image(faces / "identities" / "jennifer" / "06.jpg")  # a blond strand down her right cheek
    face = find_face(photo)
    lm, shape = face.landmarks, photo.shape[:2]
    outline = inside(face_polygon(lm), shape)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    beside = (xs < lm[36, 0]) & (ys > lm[36, 1]) & (ys < lm[48, 1])
    band = outline & beside & (ndimage.distance_transform_edt(outline) < 0.25 * interocular(lm))
    # Measured 0.03 without, 0.98 with; pasted by the classic start, it made a streak down the swapped cheek.
    assert (occlusion_mask(photo, face, hands=False)[band] > 0.5).mean() < 0.2
    assert (occlusion_mask(photo, face, hands=False, outline_strands=True)[band] > 0.5).mean() > 0.8


def test_blush_and_shading_are_not_occluders(faces):
    photo = read_image(faces / "makeup" / "makeup" / "06.jpg")  # strong blush on both cheekbones, side-lit
    face = find_face(photo)
    lm = face.landmarks
    mask = occlusion_mask(photo, face, hands=False) > 0.5
    cheekbones = _discs([(lm[41] + lm[2]) / 2, (lm[46] + lm[14]) / 2], 0.15 * interocular(lm), photo.shape[:2])
    # Measured 0.05; without the texture and sharp-edge tests (colour distance alone) 0.22.
    assert mask[cheekbones].mean() < 0.1
    assert mask[_inner_face(lm, photo.shape[:2])].mean() < 0.05


def test_a_detected_hand_is_masked(portraits, monkeypatch):
    photo, face = portraits["mark"]
    lm, (height, width) = face.landmarks, photo.shape[:2]
    # A fake MediaPipe result: 21 points spread over the right cheek, in MediaPipe's normalised coordinates.
    rng = np.random.default_rng(0)
    centre, spread = (lm[14] + lm[35]) / 2, 0.25 * interocular(lm)
    points = centre + rng.uniform(-spread, spread, (21, 2))
    hand = SimpleNamespace(landmark=[SimpleNamespace(x=x / width, y=y / height) for x, y in points])
    graph = SimpleNamespace(process=lambda image: SimpleNamespace(multi_hand_landmarks=[hand]))
    monkeypatch.setattr(occlusion, "_hands", lambda: graph)
    mask = occlusion_mask(photo, face)
    assert (mask[inside(points[ConvexHull(points).vertices], photo.shape[:2])] > 0.5).mean() > 0.99
    left_cheek = _discs([0.55 * lm[2] + 0.45 * lm[31]], 0.12 * interocular(lm), photo.shape[:2])
    assert (mask[left_cheek] <= 0.5).all()


def test_bad_inputs_are_clear_errors(portraits):
    photo, face = portraits["mark"]
    with pytest.raises(ValueError, match="RGB uint8"):
        occlusion_mask(photo[..., 0], face)
    with pytest.raises(ValueError, match="RGB uint8"):
        occlusion_mask(photo.astype(np.float32), face)
    with pytest.raises(ValueError, match=r"\(68, 2\) landmarks"):
        occlusion_mask(photo, Face(face.box, face.landmarks[:60]))
