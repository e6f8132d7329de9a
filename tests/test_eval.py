import json

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from optimswap.edits.swap import SWAP
from optimswap.eval import (
    head_pose,
    high_frequency_ratio,
    identity_distance,
    landmark_nme,
    lighting,
    lighting_error,
    nearest_identity,
    psnr,
)
from optimswap.eval.identity import identity_mean
from optimswap.eval.metrics import HEAD_MODEL, HEAD_MODEL_POINTS, flicker
from optimswap.eval.report import evaluate_record
from optimswap.face import find_face, frame_matrix, warp_to_frame
from optimswap.face.align import apply_matrix
from optimswap.face.regions import eyes_mask, lips_mask, skin_mask
from optimswap.features import load_encoder
from optimswap.io import list_images, read_image, to_tensor, write_image
from optimswap.runs import run_to_files


@pytest.fixture(scope="module")
def aligned(jennifer):
    """jennifer/01 in a 128 px aligned frame, its landmarks and skin mask."""
    face = find_face(jennifer)
    matrix = frame_matrix(face.landmarks, 128)
    landmarks = apply_matrix(matrix, face.landmarks)
    return warp_to_frame(to_tensor(jennifer), matrix, 128), landmarks, skin_mask(landmarks, 128)


def test_identical_images_score_perfectly(jennifer, aligned):
    image, landmarks, skin = aligned
    assert psnr(jennifer, jennifer) == float("inf")
    assert landmark_nme(landmarks, landmarks) == 0.0
    assert lighting_error(image, image, skin, landmarks) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_ratio(image, image, skin) == pytest.approx(1.0)


def test_shifted_landmarks_give_the_expected_nme(aligned):
    _, landmarks, _ = aligned
    from optimswap.face import interocular

    shift = 0.1 * interocular(landmarks)
    assert landmark_nme(landmarks + [shift * 0.6, shift * 0.8], landmarks) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        landmark_nme(landmarks[:10], landmarks)


def test_psnr_known_value_and_mask():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255  # one pixel fully wrong: mse = 255^2 / 16 over the whole image
    assert psnr(b, a) == pytest.approx(10 * np.log10(16))
    where = np.ones((4, 4), bool)
    where[0, 0] = False
    assert psnr(b, a, where) == float("inf")


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (25, 0, 0), (0, -12, 0), (0, 0, 9), (-18, 10, -6)])
def test_head_pose_recovers_known_rotation(yaw, pitch, roll):
    rotation = Rotation.from_euler("XYZ", [pitch, yaw, roll], degrees=True).as_matrix()
    landmarks = np.zeros((68, 2))
    landmarks[HEAD_MODEL_POINTS] = (HEAD_MODEL @ rotation.T)[:, :2] * [0.4, -0.4] + [200, 150]
    assert np.allclose(head_pose(landmarks), [yaw, pitch, roll], atol=1e-6)


def test_flicker_follows_a_jump_and_counts_only_the_output_s_own_change(jennifer):
    """A face jumps 24 px between frames (glasses_man.mp4's head jumps 20-40 px between repeated frames): the motion
    compensation follows it, an edit that moves with the face counts no flicker, and an edit that changes by 12 grey
    levels where the face did not counts about 12."""
    scene = cv2.resize(jennifer, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)  # 512 x 384, a 200-px face
    edited = scene.copy()
    edited[260:300, 150:230] = np.clip(edited[260:300, 150:230].astype(np.int16) + 40, 0, 255)  # moves with the face
    before, now = np.s_[40:480, 16:376], np.s_[40 - 24:480 - 24, 16 - 6:376 - 6]
    region = np.zeros((440, 360), bool)
    region[120:330, 90:270] = True
    excess, own = flicker(scene[before], scene[now], edited[before], edited[now], region)
    assert own < 3 and excess < 1
    brighter = np.clip(edited[now].astype(np.int16) + 12, 0, 255).astype(np.uint8)
    assert 10 < flicker(scene[before], scene[now], edited[before], brighter, region)[0] < 14


def test_lighting_proxy_sees_side_light_and_grows_with_it(aligned):
    image, landmarks, skin = aligned
    xs = torch.linspace(-1, 1, 128).view(1, 1, 1, -1)
    errors = []
    for strength in (0.1, 0.2, 0.4):
        lit = (image * (1 + strength * xs)).clamp(0, 1)  # brighter towards image right
        assert lighting(lit, skin, landmarks)[1] > lighting(image, skin, landmarks)[1]
        errors.append(lighting_error(lit, image, skin, landmarks))
    assert errors[0] < errors[1] < errors[2]


def test_high_frequency_ratio_flags_speckle_and_blur(aligned):
    image, _, skin = aligned
    g = torch.Generator().manual_seed(0)
    speckled = (image + 0.05 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(image, 3, 1, 1, count_include_pad=False)
    assert high_frequency_ratio(speckled, image, skin) > 1.5
    assert high_frequency_ratio(blurred, image, skin) < 0.7


def test_planted_identity_is_retrieved(faces):
    """A held-out photo of each person retrieves that person among all identity folders."""
    sets = {p.name: list_images(p) for p in sorted((faces / "identities").iterdir()) if p.is_dir()}
    for name, photos in sets.items():
        held_out = photos[-1]
        means = {k: identity_mean(v if k != name else v[:-1]) for k, v in sets.items()}
        from optimswap.eval.identity import photo_descriptor

        assert nearest_identity(photo_descriptor(str(held_out)), means) == name
    with pytest.raises(ValueError):
        nearest_identity(np.zeros(128), {})
    assert identity_distance(np.ones(3), np.ones(3)) == 0.0


def test_regions_come_from_landmarks(aligned):
    _, landmarks, skin = aligned
    lips, eyes = lips_mask(landmarks, 128), eyes_mask(landmarks, 128)
    ix = lambda p: (int(round(p[1])), int(round(p[0])))
    mid_lower_lip = (landmarks[57] + landmarks[66]) / 2
    assert lips[0, 0][ix(mid_lower_lip)] == 1 and eyes[0, 0][ix(landmarks[36:42].mean(0))] == 1
    assert skin[0, 0][ix(landmarks[30])] > 0.9  # nose tip is skin
    assert (skin * eyes).max() < 0.05 and (skin * lips).max() < 0.05  # features are cut out of the skin


def test_eval_reports_a_missing_output_face_instead_of_crashing(faces, tmp_path):
    out = tmp_path / "run.png"
    run_to_files("swap", faces / "identities" / "mark" / "01.jpg", {"target": faces / "identities" / "tony_blair"}, out,
                 SWAP.preset("fast", size=64, levels=1, iters=2, n_targets=1), progress=False)
    row = evaluate_record(out.with_suffix(".json"))
    assert row["error"] == "" and row["nme"] < 0.1 and row["psnr_outside"] == float("inf")
    picture = read_image(out)
    write_image(out, np.full_like(picture, 128))  # the face is gone
    row = evaluate_record(out.with_suffix(".json"))
    assert "no face" in row["error"] and "id_after" not in row
    assert row["psnr_outside"] < 40
    # The run held at least the encoder's weights (float32) in memory.
    encoder_mb = sum(p.numel() * 4 for p in load_encoder("vgg16-hed").parameters()) / 2**20
    assert json.loads(out.with_suffix(".json").read_text())["peak_memory_mb"] > encoder_mb


@pytest.fixture(scope="module")
def good_record(faces, tmp_path_factory):
    """The record of a tiny swap run (64 px, 2 iterations)."""
    out = tmp_path_factory.mktemp("good") / "good.png"
    run_to_files("swap", faces / "identities" / "mark" / "01.jpg", {"target": faces / "identities" / "tony_blair"}, out,
                 SWAP.preset("fast", size=64, levels=1, iters=2, n_targets=1), progress=False)
    return out.with_suffix(".json")


def _set(*keys_and_value):
    """A change to a record: set record[k1][k2]... = value."""
    *keys, last, value = keys_and_value

    def change(record):
        for k in keys:
            record = record[k]
        record[last] = value
    return change


# name -> (change to the good record, the field its error must name)
MALFORMED = {
    "options_list": (_set("options", [64, 1]), "options"),
    "unknown_option": (_set("options", "sharpen", 2.0), "options.sharpen"),
    "option_out_of_range": (_set("options", "size", -64), "options.size"),
    "timings_list": (_set("timings", [1.0, 2.0]), "timings"),
    "total_s_text": (_set("timings", "total_s", "fast"), "timings.total_s"),
    "source_null": (_set("source", None), "source"),
    "source_missing": (_set("source", "/nowhere/01.jpg"), "source"),
    "loss_history_number": (_set("loss_history", 3), "loss_history"),
    "face_index_negative": (_set("face_index", -1), "face_index"),
    "target_missing": (_set("inputs", "target", ["/nowhere/02.jpg"]), "inputs.target"),
    "unknown_edit": (_set("edit", "sharpen"), "edit"),
}


def test_eval_scores_the_good_runs_and_reports_each_malformed_record(good_record, tmp_path, cli):
    """One folder: a good run and a record damaged in each way. The good run is scored; each damaged one gets one
    row whose error names its file and the field; the exit code is 2."""
    good = json.loads(good_record.read_text())
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "good.json").write_text(json.dumps(good))
    expected = {}
    for name, (change, field) in MALFORMED.items():
        record = json.loads(json.dumps(good))
        change(record)
        (runs / f"{name}.json").write_text(json.dumps(record))
        expected[name] = f"{runs / name}.json: field '{field}'"
    picture = read_image(good["output"])
    write_image(runs / "half.png", picture[::2, ::2])
    (runs / "half.json").write_text(json.dumps({**good, "output": str(runs / "half.png")}))
    expected["half"] = (f"{runs / 'half'}.json: field 'output': the picture is {picture.shape[1] // 2}x"
                        f"{picture.shape[0] // 2} but the source is {picture.shape[1]}x{picture.shape[0]}")
    write_image(runs / "truncated.png", picture)  # OUT.json beside OUT.png: a record, however damaged
    (runs / "truncated.json").write_text(json.dumps(good)[:200])
    expected["truncated"] = f"{runs / 'truncated'}.json: not a readable run record"
    (runs / "notes.json").write_text("{ not JSON, and no picture beside it: not a record")
    (runs / "settings.json").write_text(json.dumps({"size": 64}))  # JSON, but no record

    code, out, err = cli("eval", runs, "-o", tmp_path / "eval.csv")
    assert code == 2 and f"{len(expected)} of {len(expected) + 1} run(s) could not be fully scored" in err
    rows = {r["run"]: r for r in json.loads((tmp_path / "eval.json").read_text())}
    assert set(rows) == {str(runs / name) for name in [*expected, "good"]}
    assert rows[str(runs / "good")]["error"] == "" and rows[str(runs / "good")]["id_after"] > 0
    for name, message in expected.items():
        assert rows[str(runs / name)]["error"].startswith(message), (name, rows[str(runs / name)]["error"])
    assert "truncated.json" in out and "sharpen" in out  # the table shows the errors too
