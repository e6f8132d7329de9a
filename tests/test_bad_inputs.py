"""Issue #12's corpus against every command: no traceback, one line naming the file or option, exit 2 for bad
input, nothing partial or temporary left behind, no existing file changed; with issue #37's cases, and what its
JPEG and same-photo makeup results must hold."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import TINY, WOULD_RUN, Case, all_cases, build_corpus, materialize, run_cli, snapshot
from PIL import Image
from scipy.ndimage import binary_dilation

from optimswap.eval.report import evaluate_record
from optimswap.io import IMAGE_SUFFIXES, read_image
from optimswap.io.image import is_temp, save_options


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, faces):
    return build_corpus(tmp_path_factory.mktemp("corpus"), faces)


def check_case(case: Case, corpus, out) -> None:
    args = materialize(case, corpus, out)
    with case.around(out) if case.around else contextlib.nullcontext():
        before = snapshot(out)
        code, stdout, err = run_cli(args, dry=case.dry)
        after = snapshot(out)
    assert "Traceback" not in err and "internal error" not in err, (case.name, err)
    if case.code is None:
        assert code in (2, WOULD_RUN), (case.name, code, err)
    else:
        assert code == case.code, (case.name, code, err)
    if code not in (0, WOULD_RUN):
        assert case.names in err.strip().splitlines()[-1], (case.name, err)
    assert case.says in stdout + err, (case.name, stdout, err)
    if case.quiet:
        assert err == "", (case.name, err)
    if code == 2:
        # one error line; warnings said before it (a skipped target photo) are lines a user sees as well
        assert len([line for line in err.strip().splitlines() if not line.startswith("WARNING: ")]) == 1, (case.name,
                                                                                                            err)
        assert after == before, f"{case.name}: files changed by a refused run"
    assert not [p for p in after if p.split("/")[-1].startswith(".")], f"{case.name}: temp files left: {after}"
    kept = {k: v for k, v in before.items() if not is_temp(k)}  # a killed writer's temps are to go
    assert all(after.get(k) == v for k, v in kept.items()), f"{case.name}: an existing file changed"
    if code == 0 and case.args[0] not in ("eval", "fetch"):
        pictures = [p for p in after if Path(p).suffix in IMAGE_SUFFIXES and p not in before]
        assert pictures and all(str(Path(p).with_suffix(".json")) in after for p in pictures), (case.name, after)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = all_cases(Path(os.environ["OPTIMSWAP_FACES"]))
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])


def test_case(case, corpus, tmp_path):
    check_case(case, corpus, tmp_path / "out")


def test_a_jpeg_result_differs_from_the_source_only_as_resaving_it_does(faces, tmp_path):
    """Beyond 16 px of what the edit changed, a JPEG result is the source re-saved with its own settings, bit for
    bit; eval reports both PSNRs outside the face."""
    plain, reference = (str(faces / "makeup" / k / "01.jpg") for k in ("plain", "makeup"))
    for name in ("exact.png", "r.jpg"):
        assert run_cli(["makeup", plain, reference, "-o", str(tmp_path / name), *TINY])[0] == 0
    source, png, jpg = (read_image(p) for p in (plain, tmp_path / "exact.png", tmp_path / "r.jpg"))
    buffer = io.BytesIO()
    Image.fromarray(source).save(buffer, **save_options(tmp_path / "r.jpg", plain))
    resaved = np.asarray(Image.open(buffer).convert("RGB"))
    changed = (png != source).any(2)
    assert 0 < changed.sum() < changed.size / 4
    near = binary_dilation(changed, np.ones((33, 33), bool))
    assert np.array_equal(jpg[~near], resaved[~near]) and not np.array_equal(jpg, png)
    row = evaluate_record(tmp_path / "r.json")
    # outside the mask but near the edit, the blocks the edit touched differ a little more
    assert abs(row["psnr_outside"] - row["psnr_outside_resaved"]) < 0.5 and row["psnr_outside"] < float("inf")


def test_makeup_with_the_plain_photo_as_reference_changes_nothing(faces, tmp_path):
    plain = str(faces / "makeup" / "plain" / "01.jpg")
    assert run_cli(["makeup", plain, plain, "-o", str(tmp_path / "r.png"), *TINY])[0] == 0
    assert np.array_equal(read_image(tmp_path / "r.png"), read_image(plain))
