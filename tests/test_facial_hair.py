from pathlib import Path

import numpy as np
import pytest
import torch
from polygons import inside
from scipy import ndimage

from optimswap.edits.swap import SWAP, keep_mask, prepare_targets, swap
from optimswap.face import Face, find_face, frame_matrix, interocular
from optimswap.face.facial_hair import beard_ending, eye_band, facial_hair_mask, glasses
from optimswap.io import read_image, to_tensor, write_image
from optimswap.pipeline import make_frame
from optimswap.registry import face_region

CLEAN = ["tony_blair", "jennifer", "angelina"]  # clean-shaven, no glasses in photo 01
TINY = dict(size=64, levels=1, iters=6, n_targets=2)


@pytest.fixture(scope="module")
def clean_faces(faces) -> dict[str, tuple[np.ndarray, Face]]:
    photos = {p: read_image(faces / "identities" / p / "01.jpg") for p in CLEAN}
    return {p: (photo, find_face(photo)) for p, photo in photos.items()}


def plant_beard(photo: np.ndarray, landmarks: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark, strand-textured beard and moustache over the lower face (jaw, chin, upper lip; the lips left bare);
    (photo, beard mask)."""
    eye = interocular(landmarks)
    beard = inside(np.concatenate([landmarks[3:14], landmarks[[35, 33, 31]]]), photo.shape[:2])
    lips = landmarks[48:60]
    centre = lips.mean(0)
    beard &= ~inside(centre + 1.15 * (lips - centre), photo.shape[:2])
    noise = np.random.default_rng(seed).normal(0, 1, photo.shape[:2])
    length = max(2, int(0.04 * eye))  # strands: noise smeared down this many pixels
    strands = sum(np.roll(noise, k, 0) for k in range(length)) / length**0.5
    hair = np.clip(45 + 22 * strands, 5, 120)[..., None] * np.array([1.0, 0.85, 0.7])
    out = photo.copy()
    out[beard] = hair[beard].astype(np.uint8)
    return out, beard


def plant_glasses(photo: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin dark frames: a ring around each eye and a bridge over the nose; (photo, frames mask)."""
    eye = interocular(landmarks)
    ys, xs = np.mgrid[0 : photo.shape[0], 0 : photo.shape[1]]
    frames = np.zeros(photo.shape[:2], bool)
    centres = [landmarks[36:42].mean(0), landmarks[42:48].mean(0)]
    for cx, cy in centres:
        r = np.hypot((xs - cx) / (0.45 * eye), (ys - cy) / (0.32 * eye))
        frames |= np.abs(r - 1) < 0.06 / 0.32
    bridge_y = (centres[0][1] + centres[1][1]) / 2 - 0.05 * eye
    frames |= ((np.abs(ys - bridge_y) < 0.03 * eye) & (xs > centres[0][0] + 0.4 * eye)
               & (xs < centres[1][0] - 0.4 * eye))
    out = photo.copy()
    out[frames] = [25, 20, 20]
    return out, frames


def test_a_planted_beard_is_found_and_clean_skin_is_not(clean_faces):
    for name, (photo, face) in clean_faces.items():
        assert not facial_hair_mask(photo, face).any(), name  # clean-shaven: nothing
        bearded, beard = plant_beard(photo, face.landmarks)
        found = facial_hair_mask(bearded, face) > 0.5
        recall = (found & beard).sum() / beard.sum()
        # nothing found away from it (its rim: the mask's soft edge and the lips' margins differ a little)
        near = ndimage.distance_transform_edt(~beard) <= 0.1 * interocular(face.landmarks)
        spill = (found & ~near).sum() / max(found.sum(), 1)
        assert recall > 0.6 and spill < 0.05, (name, recall, spill)


def test_planted_glasses_are_found_and_bare_eyes_are_not(clean_faces):
    for name, (photo, face) in clean_faces.items():
        assert not glasses(photo, face)[0], name
        worn, frames_drawn = plant_glasses(photo, face.landmarks)
        found, frames, band = glasses(worn, face)
        assert found, name
        marked = (frames > 0.5)[frames_drawn].mean()
        assert marked > 0.4, (name, marked)  # the frames are marked (not where they cross the brows or lashes)
        assert band[frames_drawn].mean() > 0.9, name  # and the band where no patch may come from covers them


def test_the_source_policy_keeps_the_beard_bit_for_bit_and_the_target_policy_replaces_it(faces, clean_faces):
    photo, face = clean_faces["tony_blair"]
    bearded, _ = plant_beard(photo, face.landmarks)
    kept = keep_mask(bearded, face, SWAP.preset(facial_hair="source"), torch.device("cpu"))
    assert kept is not None
    hair = facial_hair_mask(bearded, face) > 0.25
    assert bool((kept[0, 0].numpy()[hair] == 1).all())
    replaced = keep_mask(bearded, face, SWAP.preset(facial_hair="target"), torch.device("cpu"))
    inner = ndimage.binary_erosion(hair, iterations=3)  # the kept rim of an occluder beside the beard may reach in
    assert replaced is None or float(replaced[0, 0].numpy()[inner].mean()) < 0.05
    result = swap(bearded, faces / "identities" / "jennifer", SWAP.preset(facial_hair="source", **TINY),
                  progress=False)
    assert np.array_equal(result.image[hair], bearded[hair])


def test_a_target_photo_whose_beard_disagrees_with_the_others_gives_no_patches_there(faces, jennifer, tmp_path):
    """Two clean target photos and one with a planted beard: the bearded one is valid nowhere on its beard (with
    facial_hair=target), and is as valid as the others there without the option."""
    paths = [faces / "identities" / "tony_blair" / f"0{i}.jpg" for i in (1, 2)]
    photo = read_image(paths[0])
    face = find_face(photo)
    bearded, beard = plant_beard(photo, face.landmarks)
    write_image(tmp_path / "bearded.png", bearded)
    cfg = SWAP.preset(size=64, n_targets=3, relight_targets=False, keep_occluders=False, skip_target_glasses=False)
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)
    targets = prepare_targets([*paths, tmp_path / "bearded.png"], frame, cfg, torch.device("cpu"))
    index = [u["path"] for u in targets.used].index(str(tmp_path / "bearded.png"))
    assert [u["facial_hair"] for u in targets.used].count(True) == 1
    same = [u["path"] for u in targets.used].index(str(paths[0]))  # the same photo without the beard
    lost = float(targets.valid[same].sum() - targets.valid[index].sum())
    beard_cells = beard.sum() * abs(np.linalg.det(frame_matrix(face.landmarks, 64)[:, :2]))
    assert lost > 0.5 * beard_cells, (lost, beard_cells)
    kept_all = prepare_targets([*paths, tmp_path / "bearded.png"], frame, cfg.replace(facial_hair="source"),
                               torch.device("cpu"))
    # without the option the beard costs far less (the face mask moves a little with the landmarks found in it)
    assert float(kept_all.valid[same].sum() - kept_all.valid[index].sum()) < lost - 0.5 * beard_cells


def test_a_beard_ends_softly_on_the_lower_border_of_the_face(jennifer):
    """The source's weight is 1 from the mask's border below the nose to half the fade's width inside, falls
    smoothly, and is 0 deeper than the width and above the nose's base."""
    cfg = SWAP.preset(size=128)
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)
    width, eye = 0.2, interocular(frame.landmarks)
    weight = beard_ending(frame.mask, frame.landmarks, width)[0, 0].numpy()
    inside = frame.mask[0, 0].numpy() > 0.5
    depth = ndimage.distance_transform_edt(inside)
    rows = np.arange(inside.shape[0])[:, None] + np.zeros_like(depth)
    chin = inside & (rows > frame.landmarks[57, 1])
    assert weight[chin & (depth <= 0.5 * width * eye)].min() == 1  # along the jaw under the mouth: the source's skin
    assert weight[inside & (depth >= width * eye)].max() == 0  # deeper: the swapped face untouched
    assert weight[inside & (rows < frame.landmarks[33, 1])].max() == 0  # above the nose's base: no fade
    band = chin & (depth > 0.5 * width * eye + 1) & (depth < width * eye - 1)
    assert weight[band].min() > 0 and weight[band].max() < 1  # a soft ramp, no step


def test_target_photos_with_glasses_give_no_eye_patches_unless_most_wear_them(faces, jennifer, tmp_path):
    """One of three target photos in planted glasses is valid nowhere on its eye band; with two of three in glasses,
    glasses are the person's and no photo loses its eyes."""
    paths = [faces / "identities" / "tony_blair" / f"0{i}.jpg" for i in (1, 2, 3)]
    photos = [read_image(p) for p in paths]
    for i, photo in enumerate(photos):
        write_image(tmp_path / f"glasses{i}.png", plant_glasses(photo, find_face(photo).landmarks)[0])
    cfg = SWAP.preset(size=64, n_targets=3, relight_targets=False, keep_occluders=False, skip_target_glasses=True)
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)

    # the eye band's core (the photos are warped most of the way to the source's landmarks)
    core = torch.as_tensor(ndimage.binary_erosion(eye_band(frame.landmarks, 64), iterations=3))

    def eyes_valid(chosen: list) -> dict[str, float]:
        """Each photo's mean validity on the eye band's core, by file name."""
        targets = prepare_targets(chosen, frame, cfg, torch.device("cpu"))
        assert [u["glasses"] for u in targets.used].count(True) == sum("glasses" in str(p) for p in chosen)
        return {Path(u["path"]).name: float(targets.valid[i, 0][core].mean()) for i, u in enumerate(targets.used)}

    one = eyes_valid([tmp_path / "glasses0.png", *paths[1:]])
    assert one["glasses0.png"] < 0.1 and min(one["02.jpg"], one["03.jpg"]) > 0.6, one
    two = eyes_valid([tmp_path / "glasses0.png", tmp_path / "glasses1.png", paths[2]])
    assert min(two.values()) > 0.6, two  # most photos in glasses: nobody's eyes are skipped
