"""The memory estimate against measured runs, the available-memory probe, and a run refused before it starts."""

from __future__ import annotations

import pytest
import torch

from optimswap import memory
from optimswap.edits.makeup import MAKEUP
from optimswap.edits.swap import SWAP
from optimswap.errors import OptionError
from optimswap.face import find_face
from optimswap.io import read_image
from optimswap.memory import GIB, available_memory, estimate_memory
from optimswap.pipeline import photo_region
from optimswap.registry import run_edit

MARK_PIXELS = 1024 * 682  # identities/mark/01.jpg


# frame size, target photos, photo pixels, measured peak MB above the process before the run (swap, 2 iterations)
MEASURED = [(64, 1, MARK_PIXELS, 560), (256, 1, MARK_PIXELS, 727), (512, 1, MARK_PIXELS, 1694),
            (256, 8, MARK_PIXELS, 1043), (512, 8, MARK_PIXELS, 3512), (128, 1, 16 * MARK_PIXELS, 3293)]


@pytest.mark.parametrize("size, targets, pixels, measured_mb", MEASURED)
def test_estimate_covers_the_measured_swaps_without_much_to_spare(size, targets, pixels, measured_mb):
    cfg = SWAP.preset(size=size, levels=1, iters=2, n_targets=targets)
    assert 0.95 <= estimate_memory(cfg, pixels) / 2**20 / measured_mb <= 1.35


def test_estimate_grows_with_the_frame_the_targets_the_photo_and_lbfgs_memory():
    base = SWAP.preset(size=256, iters=50)
    estimate = lambda cfg, pixels=MARK_PIXELS: estimate_memory(cfg, pixels)
    assert estimate(base.replace(size=512)) > 3 * (estimate(base) - memory.FIXED)
    assert estimate(base.replace(n_targets=2)) < estimate(base)
    per_pixel = memory.PER_PHOTO_PIXEL + memory.PER_WHOLE_PIXEL
    assert estimate(base, 4 * MARK_PIXELS) - estimate(base) == per_pixel * 3 * MARK_PIXELS
    # a larger photo around the same face region costs its decoding and writing only
    larger = estimate_memory(base, MARK_PIXELS, 30 * MARK_PIXELS) - estimate(base)
    assert larger == memory.PER_WHOLE_PIXEL * 29 * MARK_PIXELS
    lbfgs_history = estimate(base) - estimate(base.replace(optimizer="adam"))
    assert lbfgs_history == 4 * 3 * (2 * 50 + 4) * 256**2  # 50 remembered steps, two 3-channel images each
    assert estimate(base.replace(iters=10)) < estimate(base)  # no more steps remembered than taken
    assert estimate_memory(MAKEUP.preset(size=256), MARK_PIXELS) < estimate(base)  # one reference, not 8 targets
    assert estimate(SWAP.preset(size=4096)) > 150 * GIB  # the size option's upper end needs a large machine


def test_available_memory_reads_the_system_and_a_cgroup_limit(tmp_path, monkeypatch):
    system = available_memory(torch.device("cpu"))
    assert system is not None and 0 < system < 2**50
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{2 * GIB}\n")
    (v2 / "memory.current").write_text(f"{int(1.5 * GIB)}\n")
    (v2 / "memory.stat").write_text(f"anon 1234\ninactive_file {GIB // 4}\n")
    monkeypatch.setattr(memory, "CGROUPS", ((str(v2), "memory.max", "memory.current", "inactive_file"),))
    assert available_memory(torch.device("cpu")) == min(system, int(0.75 * GIB))  # page cache can be reclaimed
    (v2 / "memory.max").write_text("max\n")
    assert abs(available_memory(torch.device("cpu")) - system) < GIB  # no limit: the system's (which moves a bit)


@pytest.fixture
def little_memory(monkeypatch):
    """1 GiB available, and a trap for any work after the check."""
    monkeypatch.setattr(memory, "available_memory", lambda device: GIB)

    def trap(*args, **kwargs):
        raise AssertionError("the run went on after the memory check")

    monkeypatch.setattr("optimswap.registry.run_pipeline", trap)


def test_a_run_that_does_not_fit_is_refused_before_anything_runs(faces, little_memory):
    cfg = SWAP.preset(size=1024)
    photo = read_image(faces / "identities" / "mark" / "01.jpg")
    rows, columns = photo_region(*photo.shape[:2], find_face(photo), cfg)
    region = (rows.stop - rows.start) * (columns.stop - columns.start)
    assert region < MARK_PIXELS  # the face's part of the photo
    needed = estimate_memory(cfg, region, MARK_PIXELS) / GIB
    with pytest.raises(OptionError) as err:
        run_edit("swap", faces / "identities" / "mark" / "01.jpg", {"target": faces / "identities" / "tony_blair"},
                 cfg, progress=False)
    assert err.value.option == "size"
    assert err.value.reason == (f"needs about {needed:.1f} GiB of memory at size 1024 for a 0.7-megapixel photo, "
                                "1.0 GiB available (cpu); use a smaller size")


def test_the_command_line_names_the_size_flag_and_writes_nothing(faces, tmp_path, cli, little_memory):
    code, _, err = cli("swap", faces / "identities" / "mark" / "01.jpg", faces / "identities" / "tony_blair", "-o",
                       tmp_path / "out.png", "--size", "2048", "--device", "cpu")
    assert code == 2 and err.startswith("error: --size: needs about ") and "1.0 GiB available (cpu)" in err
    assert not list(tmp_path.iterdir())
