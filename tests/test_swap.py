import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from optimswap.cli import main
from optimswap.config import preset
from optimswap.face import face_descriptor, face_mask, find_face, frame_matrix, interocular, warp_from_frame
from optimswap.face.align import apply_matrix
from optimswap.io import read_image
from optimswap.pipeline import Level, make_frame
from optimswap.io import to_tensor
from optimswap.swap import prepare_targets, swap, swap_objective, list_images
from optimswap.optim import resize_to, run_lbfgs

TINY = dict(size=64, levels=1, iters=6, n_targets=2)


def test_lbfgs_lowers_the_total_loss(jennifer, faces):
    cfg = preset("fast", **TINY)
    device = torch.device("cpu")
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg)
    targets = prepare_targets(list_images(faces / "identities" / "angelina"), frame, cfg, device)
    objective = swap_objective(targets, cfg, device)(Level(64, frame.image, frame.mask))
    param = frame.image.clone()
    render = lambda p: frame.image + frame.mask * (p - frame.image)
    history = run_lbfgs(param, render, objective, iters=12, refresh_every=6, progress=False)
    first_round = [h["total"] for h in history[: len(history) // 2]]
    assert history[-1]["total"] < 0.8 * history[0]["total"]
    assert min(first_round) < first_round[0]


def test_swap_keeps_background_and_size(jennifer, faces):
    cfg = preset("fast", **TINY)
    result = swap(faces / "identities" / "jennifer" / "01.jpg", faces / "identities" / "angelina", cfg, progress=False)
    assert result.image.shape == jennifer.shape
    assert len(result.targets.used) == 2
    # Everything outside the warped-back mask's support is the input, bit for bit.
    h, w = jennifer.shape[:2]
    support = warp_from_frame(result.frame.mask, result.frame.matrix, h, w)[0, 0].numpy() > 0
    assert np.array_equal(result.image[~support], jennifer[~support])
    assert np.abs(result.image[support].astype(int) - jennifer[support]).mean() > 0.5  # the face did change


def test_swap_moves_identity_towards_target(faces):
    """jennifer/01 -> angelina at the calibration setting (128 px): closer to angelina, pose kept."""
    src_path = faces / "identities" / "jennifer" / "01.jpg"
    cfg = preset("fast")
    result = swap(src_path, faces / "identities" / "angelina", cfg, progress=False)
    source = read_image(src_path)
    targets = [read_image(p) for p in list_images(faces / "identities" / "angelina")]
    mean = np.mean([face_descriptor(t, find_face(t)) for t in targets], 0)
    f_src, f_out = find_face(source), find_face(result.image)
    before = np.linalg.norm(face_descriptor(source, f_src) - mean)
    after = np.linalg.norm(face_descriptor(result.image, f_out) - mean)
    nme = np.linalg.norm(f_out.landmarks - f_src.landmarks, axis=1).mean() / interocular(f_src.landmarks)
    assert after < before - 0.08
    assert nme < 0.05


def test_cli_swap_writes_outputs_and_protects_inputs(tmp_path, faces):
    src = faces / "identities" / "tony_blair" / "01.jpg"
    tdir = faces / "identities" / "mark"
    out = tmp_path / "out.png"
    args = ["swap", str(src), str(tdir), "-o", str(out), "--size", "64", "--levels", "1", "--iters", "3",
            "--n-targets", "1", "-q"]
    runner = CliRunner()
    res = runner.invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert read_image(out).shape == read_image(src).shape
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["options"]["size"] == 64 and len(record["targets_used"]) == 1 and record["loss_history"]
    # Existing output is not replaced without --overwrite; an input never is.
    res = runner.invoke(main, args)
    assert res.exit_code != 0 and "exists" in res.output
    res = runner.invoke(main, [*args[:3], "-o", str(src), *args[5:]])
    assert res.exit_code != 0 and "input" in res.output


def test_bad_inputs_are_clear_errors(tmp_path, faces):
    from optimswap.io import ImageError, write_image

    blank = tmp_path / "blank.png"
    write_image(blank, np.full((120, 120, 3), 90, np.uint8))
    with pytest.raises(ImageError, match="no face"):
        swap(blank, faces / "identities" / "mark", preset("fast", **TINY), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no target photos"):
        swap(faces / "identities" / "mark" / "01.jpg", empty, preset("fast", **TINY), progress=False)
    with pytest.raises(ValueError):
        preset("fast", size=90)  # not divisible by 2**levels
    with pytest.raises(ValueError):
        preset("nope")
