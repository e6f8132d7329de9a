"""Lighting: the relighting generator, the shipped lighting network, the loss and its training."""

import dataclasses

import numpy as np
import pytest
import torch

from optimswap.edits.swap import SWAP
from optimswap.eval import lighting
from optimswap.eval.report import evaluate_record
from optimswap.face import find_face, frame_matrix
from optimswap.face.align import apply_matrix
from optimswap.face.regions import skin_mask
from optimswap.io import read_image, to_tensor, write_image
from optimswap.lighting.net import LightingNet, load_lighting_net
from optimswap.lighting.relight import (
    FRONT,
    FaceGeometry,
    Light,
    direction,
    lighting_change,
    relight,
    relight_photo,
    transfer_lighting,
)
from optimswap.lighting.train import TrainConfig, evaluate, load_faces, sample_pairs, train
from optimswap.losses import LightingLoss, lighting_loss
from optimswap.runs import run_to_files


def side_light(azimuth: float) -> torch.Tensor:
    return Light(direction(azimuth, 10), 0.3, 1.0, (1.0, 1.0, 1.0)).as_tensor()[None]


@pytest.fixture(scope="module")
def face_frame(jennifer):
    """jennifer/01 in a 128 px aligned frame with its landmarks and fitted geometry."""
    face = find_face(jennifer)
    geometry = FaceGeometry.from_photo(to_tensor(jennifer), face.landmarks, 128)
    return geometry.image, apply_matrix(frame_matrix(face.landmarks, 128), face.landmarks), geometry


def test_side_light_brightens_its_side(face_frame):
    """Light from image right (positive azimuth) makes the skin brighter towards the right, and more so the
    further round the light is; from the left, the other way. Measured with the eval's lighting proxy."""
    image, landmarks, geometry = face_frame
    skin = skin_mask(landmarks, 128)
    slopes = [lighting(relight(geometry, side_light(az)), skin, landmarks)[1] for az in (-60, 0, 30, 60)]
    assert slopes[0] < slopes[1] < slopes[2] < slopes[3]
    assert slopes[0] < -0.05 and slopes[3] > 0.05


def test_lighting_change_is_zero_for_one_light_and_grows_with_the_angle(face_frame):
    _, _, geometry = face_frame
    front = FRONT.as_tensor()[None]
    assert float(lighting_change(geometry, front, front)) == pytest.approx(0.0, abs=1e-6)
    changes = [float(lighting_change(geometry, front, side_light(az))) for az in (15, 40, 70)]
    assert changes[0] < changes[1] < changes[2]
    # Intensity and colour are not lighting changes (they mix with exposure and skin tone across photos).
    tinted = Light(FRONT.direction, FRONT.ambient, 1.3, (1.1, 1.0, 0.9)).as_tensor()[None]
    assert float(lighting_change(geometry, front, tinted)) == pytest.approx(0.0, abs=1e-6)


def test_relight_keeps_the_background(face_frame):
    """The directional part acts on the face only: far corners change only by intensity and colour (here none)."""
    image, _, geometry = face_frame
    out = relight(geometry, side_light(70))
    assert torch.equal(out[..., :8, :8], image[..., :8, :8])
    assert (out - image).abs()[..., 40:90, 40:90].mean() > 0.02


def test_geometry_flip_is_the_mirror_image(face_frame):
    _, _, geometry = face_frame
    mirrored = relight(geometry.flip(), side_light(-50))
    assert torch.allclose(mirrored, relight(geometry, side_light(50)).flip(-1), atol=1e-5)


def test_lighting_loss_zero_for_identical_and_grows_with_relighting(face_frame):
    image, _, geometry = face_frame
    net = load_lighting_net()
    loss = LightingLoss(net, image)
    assert float(loss(image)) == 0.0
    values = [float(loss(relight(geometry, side_light(az)))) for az in (0, 25, 50, 75)]
    assert values[0] < values[1] < values[2] < values[3]
    assert values[3] > 1.0  # beyond the classifier's "lit differently" threshold


def test_lighting_loss_gradient():
    torch.manual_seed(0)
    net = LightingNet().double()
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)  # embed() resizes to 64 px
    target = net.embed(torch.rand(1, 3, 8, 8, dtype=torch.float64)).detach()
    assert torch.autograd.gradcheck(lambda x: lighting_loss(net, x, target), (image,), eps=1e-6, atol=1e-5)


def test_lighting_loss_rejects_bad_shapes():
    net = LightingNet()
    with pytest.raises(ValueError):
        lighting_loss(net, torch.rand(2, 3, 16, 16), torch.zeros(3, 64))
    with pytest.raises(ValueError):
        net.embed(torch.rand(1, 1, 16, 16))


@pytest.fixture(scope="module")
def tiny_training(faces):
    return dataclasses.replace(TrainConfig(), train_sets=("makeup/plain",), test_sets=("identities/tony_blair",),
                               jitters=1, steps=3, batch=8, test_pairs=16)


def test_shipped_network_separates_held_out_pairs(faces, tiny_training):
    """Fresh synthetic pairs of people the network never saw: >= 90 % right (the report has the full figure)."""
    cfg = dataclasses.replace(tiny_training, seed=123)
    rng = np.random.default_rng(cfg.seed)
    held_out, photos = load_faces(faces, TrainConfig().test_sets, cfg, rng)
    result = evaluate(load_lighting_net(), sample_pairs(held_out, photos, 200, cfg, rng))
    assert result["accuracy"] >= 0.9, result


def test_training_is_reproducible_from_the_seed(faces, tiny_training, tmp_path):
    reports = [train(faces, tiny_training, tmp_path / f"{k}.pt", progress=False) for k in range(2)]
    first, second = (torch.load(tmp_path / f"{k}.pt", weights_only=True) for k in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert reports[0]["held_out_people"] == reports[1]["held_out_people"]
    assert (tmp_path / "0.json").exists()


def test_train_lighting_never_overwrites_without_asking(tmp_path, cli):
    existing = tmp_path / "net.pt"
    existing.write_bytes(b"keep")
    code, _, err = cli("train-lighting", "-o", existing, "--steps", "1")
    assert code == 2 and "--overwrite" in err and str(existing) in err
    assert existing.read_bytes() == b"keep"


@pytest.fixture(scope="module")
def side_lit_source(faces, tmp_path_factory):
    """deepface_id29/02 (a person the lighting network never saw) relit from image right."""
    photo = read_image(faces / "identities" / "deepface_id29" / "02.jpg")
    path = tmp_path_factory.mktemp("lighting") / "side_lit.png"
    write_image(path, relight_photo(photo, find_face(photo).landmarks, Light(direction(60, 15), 0.25, 1.0, (1, 1, 1))))
    return path


def test_transfer_lighting_carries_the_side_light(face_frame, side_lit_source):
    """jennifer re-shaded to the side-lit source's estimated lighting is brighter towards the right."""
    image, landmarks, geometry = face_frame
    source = read_image(side_lit_source)
    source_geometry = FaceGeometry.from_photo(to_tensor(source), find_face(source).landmarks, 128)
    skin = skin_mask(landmarks, 128)
    before = lighting(image, skin, landmarks)[1]
    after = lighting(transfer_lighting(geometry, source_geometry.light), skin, landmarks)[1]
    assert after > before + 0.2


def test_swap_keeps_a_side_light(side_lit_source, faces, tmp_path):
    """With the lighting loss and re-shaded targets the swapped face keeps the source's side light (eval lighting
    proxy), without either it takes the front light of the target photos."""
    errors = {}
    for on in (False, True):
        cfg = SWAP.preset("fast", size=64, levels=1, iters=15, n_targets=4, relight_targets=on,
                          lighting_weight=SWAP.preset().lighting_weight if on else 0.0)
        out = tmp_path / f"swap_{on}.png"
        run_to_files("swap", side_lit_source, {"target": faces / "identities" / "jennifer"}, out, cfg, progress=False)
        errors[on] = evaluate_record(out.with_suffix(".json"))["lighting_error"]
    assert errors[True] < 0.5 * errors[False], errors
