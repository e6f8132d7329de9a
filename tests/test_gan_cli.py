"""The StyleGAN2 commands (issue #15): invert -> directions -> edit on a tiny generator checkpoint written here, the
paste-back, the files each writes, the named directions and their fit, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_gan import TINY, tiny_checkpoint, tiny_generator

from optimswap.errors import OptionError
from optimswap.eval.report import evaluate_record
from optimswap.face import Face, find_face, warp_from_frame
from optimswap.gan import load_generator, scorers
from optimswap.gan.directions import edit_latent, fit_from_scorer, read_directions
from optimswap.gan.edit import INVERT_PRESETS, InvertConfig
from optimswap.io import read_image, to_tensor
from optimswap.pipeline import make_frame
from optimswap.registry import face_region

FAST = ["--size", "32", "--w-avg-samples", "100", "--perceptual-weight", "0", "-q"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def photo(faces) -> Path:
    return faces / "identities" / "jennifer" / "01.jpg"


def outside_face(photo: Path) -> np.ndarray:
    """The photo's pixels that the face region of the invert edit's frame does not touch."""
    image = read_image(photo)
    frame = make_frame(to_tensor(image), find_face(image), INVERT_PRESETS["default"].replace(size=32), face_region)
    return warp_from_frame(frame.mask, frame.matrix, *image.shape[:2])[0, 0].numpy() == 0


def test_invert_then_edit_writes_the_latent_and_pastes_the_moved_face_back(photo, tmp_path, cli):
    g = tiny_checkpoint(tmp_path / "g.pt", seed=1)
    code, out, err = cli("invert", photo, "--generator", g, "-o", tmp_path / "lat.pt", "--iters", "100", *FAST)
    assert code == 0, err
    assert "wrote lat.pt, lat.png and lat.json" in out
    saved = torch.load(tmp_path / "lat.pt", weights_only=True)
    assert saved["latent"].shape == (1, 8, TINY.w_dim) and len(saved["noises"]) == 7
    record = json.loads((tmp_path / "lat.json").read_text())
    assert record["latent"] == str(tmp_path / "lat.pt") and record["output"] == str(tmp_path / "lat.png")
    assert record["options"]["generator"] == str(g) and record["edit"] == "invert"
    row = evaluate_record(tmp_path / "lat.json")  # eval scores the reconstruction's attributes before and after
    assert row["psnr_outside"] == float("inf") and abs(row["yaw_after"] - row["yaw_before"]) < 15, row

    code, out, err = cli("directions", "sefa", "--generator", g, "-k", "3", "-o", tmp_path / "dirs.pt")
    assert code == 0 and "sefa0 ... sefa2" in out, err
    code, out, err = cli("edit", photo, "--generator", g, "--latent", tmp_path / "lat.pt", "--directions",
                         tmp_path / "dirs.pt", "--attr", "sefa0=+4", "-o", tmp_path / "out.png", *FAST)
    assert code == 0 and "moved sefa0 +4" in out, err
    source, inverted, edited = (read_image(p) for p in (photo, tmp_path / "lat.png", tmp_path / "out.png"))
    outside = outside_face(photo)
    assert outside.any() and (~outside).any()
    assert np.array_equal(edited[outside], source[outside]) and np.array_equal(inverted[outside], source[outside])
    assert np.abs(edited[~outside].astype(int) - inverted[~outside]).mean() > 1  # the move changed the face
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["options"]["attr"] == ["sefa0=+4"] and record["options"]["latent"] == str(tmp_path / "lat.pt")
    assert record["moves"] == [{"name": "sefa0", "source": str(tmp_path / "dirs.pt"), "strength": 4.0}]
    assert record["loss_history"] == []  # the latent was given: nothing fitted

    # Not without --overwrite; nothing changed by the refusal.
    code, _, err = cli("edit", photo, "--generator", g, "--latent", tmp_path / "lat.pt", "--directions",
                       tmp_path / "dirs.pt", "--attr", "sefa0=-4", "-o", tmp_path / "out.png", *FAST)
    assert code == 2 and err.strip() == f"error: --overwrite: {tmp_path / 'out.png'} exists; it is replaced only " \
                                        "with this option"
    assert np.array_equal(read_image(tmp_path / "out.png"), edited)


def test_edit_inverts_when_given_no_latent_and_saves_the_pti_tuned_generator_on_request(photo, tmp_path, cli):
    g = tiny_checkpoint(tmp_path / "g.pt", seed=2)
    np.save(tmp_path / "d.npy", np.eye(TINY.w_dim, dtype=np.float32)[:1])
    code, out, err = cli("edit", photo, "--generator", g, "--direction", f"{tmp_path / 'd.npy'}=2", "--iters", "5",
                         "--pti-steps", "3", "--save-generator", "-o", tmp_path / "e.png", *FAST)
    assert code == 0 and "wrote e.png, e.generator.pt and e.json" in out, err
    record = json.loads((tmp_path / "e.json").read_text())
    stages = {row.get("stage") for row in record["loss_history"]}
    assert stages == {None, "pti"} and sum(row.get("stage") == "pti" for row in record["loss_history"]) == 3
    tuned, original = load_generator(tmp_path / "e.generator.pt"), load_generator(g)
    z = torch.randn(1, TINY.z_dim, generator=torch.Generator().manual_seed(0))
    assert tuned.arch == original.arch and not torch.equal(tuned(z), original(z))


def test_directions_sefa_writes_an_independent_eigendecomposition(tmp_path, cli):
    g = tiny_checkpoint(tmp_path / "g.pt", seed=3)
    assert cli("directions", "sefa", "-g", g, "-k", "5", "-o", tmp_path / "s.pt")[0] == 0
    named = read_directions(tmp_path / "s.pt")
    about = torch.load(tmp_path / "s.pt", weights_only=True)
    net = load_generator(g)
    rows = [m.affine.weight for b in net.synthesis.blocks() for m in (*b.layers(), b.torgb)]
    a = np.concatenate([r.numpy() for r in rows]).astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(a)
    assert list(named) == [f"sefa{i}" for i in range(5)] and about["method"] == "sefa"
    assert np.allclose(about["eigenvalues"], s[:5] ** 2, rtol=1e-4)
    assert np.allclose(np.abs([float(named[f"sefa{i}"] @ torch.from_numpy(vt[i]).float()) for i in range(5)]), 1,
                       atol=1e-4)


def test_directions_fit_with_a_planted_landmark_detector(tmp_path, cli, jennifer, monkeypatch):
    """The detector is replaced by one that reads the 'mouth opening' off the image's redness, so the real mouth
    aspect ratio scores the generated images by a planted attribute; one image in four has 'no face'."""
    template = find_face(jennifer).landmarks
    seen = []

    def planted_faces(image: np.ndarray, backend: str = "dlib") -> list[Face]:
        seen.append(1)
        if len(seen) % 4 == 0:
            return []
        redness = float(image[..., 0].mean() - image[..., 2].mean()) / 255
        lm = template.copy()
        lm[[65, 66, 67]] += [0.0, 20.0 * (1.5 + redness)]  # the lower inner lip drops with the redness
        return [Face((0, 0, 1, 1), lm)]

    monkeypatch.setattr(scorers, "detect_faces", planted_faces)
    g = tiny_checkpoint(tmp_path / "g.pt", seed=4)
    code, out, err = cli("directions", "fit", "-g", g, "--attr", "smile", "--samples", "400", "-q", "-o",
                         tmp_path / "fit.pt")
    assert code == 0 and "smile (300 of 400 images scored)" in out, err
    smile = read_directions(tmp_path / "fit.pt")["smile"]
    redness = lambda img: (img[:, 0] - img[:, 2]).mean(dim=(1, 2))
    net = tiny_generator(4)
    assert float(smile @ fit_from_scorer(net, redness, n=400)) > 0.9  # as fitted on the planted score directly
    start = net.mapping(torch.randn(1, TINY.z_dim, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        scores = [float(redness((net.synthesis(edit_latent(start, [(smile, s)])[:, None].expand(-1, 8, -1)) + 1) / 2))
                  for s in np.linspace(-2, 2, 9)]
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False)), scores


def test_gan_commands_refuse_bad_requests_in_one_line(photo, tmp_path, cli):
    g = tiny_checkpoint(tmp_path / "g.pt")
    torch.save({"directions": {"smile": torch.ones(TINY.w_dim + 1)}}, tmp_path / "wide.pt")
    torch.save({"directions": {"smile": torch.ones(TINY.w_dim)}}, tmp_path / "dirs.pt")
    base = ["edit", photo, "--generator", g, "-o", tmp_path / "r.png", *FAST]
    cases = {
        ("invert", photo, "--generator", g, "-o", tmp_path / "r.png"): "--output: .*name it LATENT.pt",
        tuple(base): "--attr: nothing to move",
        (*base, "--attr", "smile=1"): "--directions: named attributes need a file of named directions: make one "
                                      "with optimswap directions fit --generator G --attr smile -o DIRS.pt",
        (*base, "--attr", "smile=+x"): "--attr: expected NAME=STRENGTH",
        (*base, "--attr", "smile=1", "--directions", tmp_path / "wide.pt"): "--directions: .* its directions have 33 "
                                                                           "values but the generator's W has 32",
        (*base, "--attr", "smile=1", "--directions", tmp_path / "dirs.pt", "--keep", "smile"): "--keep: .*both",
        (*base, "--attr", "frown=1", "--directions", tmp_path / "dirs.pt"): "--attr: .*dirs.pt has no direction "
                                                                           "'frown' .*fit one for 'frown'",
        (*base, "--latent", tmp_path / "wide.pt", "--direction", f"{tmp_path / 'dirs.pt'}=1"): "--latent: .*wide.pt: "
                                                                                            "expected a latent",
        ("directions", "fit", "-g", g, "--attr", "age", "-o", tmp_path / "d.pt"): "--attr: no scorer for age",
        ("directions", "sefa", "-g", g, "-k", "40", "-o", tmp_path / "d.pt"): "--count: .* at most",
        ("directions", "sefa", "-g", g, "-o", tmp_path / "d.npy"): "--output: .*name it DIRS.pt",
    }
    for args, message in cases.items():
        code, _, err = cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert re.search(message, err), (message, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirs.pt", "g.pt", "wide.pt"]


def test_the_invert_config_keeps_ffhqs_crop():
    with pytest.raises(OptionError, match="frame_scale: must be 1"):
        InvertConfig(frame_scale=1.2)
