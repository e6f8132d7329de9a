"""Outputs: checked before any work, a picture and its record placed as one (record first), a file that appears
meanwhile never replaced, no temp file left after a failure or a signal."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from optimswap import runs
from optimswap.edits.swap import SWAP
from optimswap.errors import ImageError, OptimswapError, OptionError
from optimswap.io import read_image, write_image
from optimswap.io.image import FileAppeared, json_file, write_files

TINY = ["--preset", "fast", "--size", "64", "--levels", "1", "--iters", "2", "--n-targets", "1", "-q"]
CFG = SWAP.preset("fast", size=64, levels=1, iters=2, n_targets=1)


def fake_result(image: np.ndarray) -> SimpleNamespace:
    """What write_run reads from an EditResult, without running an edit."""
    return SimpleNamespace(image=image, record={"targets_used": []}, source_face=SimpleNamespace(box=[0, 0, 8, 8]),
                           frame_result=SimpleNamespace(device=torch.device("cpu")), timings={"total_s": 0.0},
                           history=[{"total": 1.0}], recoveries=[])


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture
def pair(faces) -> tuple[Path, Path]:
    return faces / "identities" / "mark" / "01.jpg", faces / "identities" / "tony_blair"


@pytest.fixture
def no_run(monkeypatch):
    monkeypatch.setattr(runs, "run_edit", lambda *a, **k: pytest.fail("the optimization started"))


@pytest.fixture
def fake_run(monkeypatch):
    """run_edit replaced by an instant result (the source photo unchanged); ``fake_run.during`` runs inside it."""
    state = SimpleNamespace(during=lambda: None, calls=0)

    def run_edit(edit_name, source, *args, **kwargs):
        state.calls += 1
        state.during()
        return fake_result(read_image(source))

    monkeypatch.setattr(runs, "run_edit", run_edit)
    return state


def can_write_in_readonly_folder(tmp_path: Path) -> bool:
    folder = tmp_path / "probe"
    folder.mkdir(mode=0o500)
    try:
        (folder / "x").touch()
        return True
    except PermissionError:
        return False
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("case", ["parent is a file", "proc", "extension", "no extension", "record is a folder",
                                  "read-only folder"])
def test_unwritable_output_fails_before_the_run(case, tmp_path, pair, cli, no_run):
    (tmp_path / "file.txt").write_text("x")
    out, reason = {  # the error names the path and the reason
        "parent is a file": (tmp_path / "file.txt" / "sub" / "out.png", f"{tmp_path}/file.txt is a file, not a folder"),
        "proc": (Path("/proc/optimswap_x.png"), "/proc/optimswap_x.png: cannot create files in /proc"),
        "extension": (tmp_path / "out.xyz", "out.xyz: cannot write a picture with the extension '.xyz'"),
        "no extension": (tmp_path / "out", f"{tmp_path}/out: cannot write a picture without an extension"),
        "record is a folder": (tmp_path / "out.png", f"{tmp_path}/out.json is a folder"),
        "read-only folder": (tmp_path / "locked" / "new" / "out.png", f"cannot create files in {tmp_path}/locked"),
    }[case]
    if case == "record is a folder":
        (tmp_path / "out.json").mkdir()
    if case == "read-only folder":
        if can_write_in_readonly_folder(tmp_path):
            pytest.skip("file modes do not bind this user (root)")
        (tmp_path / "locked").mkdir(mode=0o500)
    code, _, err = cli("swap", *pair, "-o", out, *TINY)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert reason in err
    assert not (tmp_path / "out.png").exists()


def test_output_that_is_a_folder_fails_before_the_run(tmp_path, pair, no_run):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(OptimswapError, match="out.png is a folder"):
        runs.run_to_files("swap", pair[0], {"target": pair[1]}, tmp_path / "out.png", CFG, progress=False)


def test_eval_and_ablate_outputs_checked_before_work(tmp_path, pair, cli, monkeypatch):
    from optimswap.eval import report

    monkeypatch.setattr(report, "find_records", lambda *a: pytest.fail("eval started"))
    code, _, err = cli("eval", tmp_path, "-o", "/proc/optimswap_x/table.csv")
    assert code == 2 and "error: --output: /proc/optimswap_x/table.csv: cannot create files in /proc" in err
    code, _, err = cli("eval", tmp_path, "-o", tmp_path / "table.json")
    assert code == 2 and "name it .csv" in err

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "pairs.csv").write_text(f"source,target\n{pair[0]},{pair[1]}\n")
    code, _, err = cli("ablate", "--pairs", tmp_path / "pairs.csv", "-o", tmp_path / "file.txt" / "sweep", "-q")
    assert code == 2 and "file.txt is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "pairs.csv"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_record_is_placed_before_the_picture(overwrite, tmp_path, pair, fake_run, monkeypatch):
    out = tmp_path / "out.png"
    if overwrite:
        write_image(out, np.zeros((8, 8, 3), np.uint8))
        out.with_suffix(".json").write_text("{}")
    placed = []
    for name in ("link", "replace"):
        real = getattr(os, name)

        def place(src, dst, real=real):
            real(src, dst)
            placed.append((Path(dst).name, out.with_suffix(".json").read_text() != "{}"))

        monkeypatch.setattr(os, name, place)
    record = runs.run_to_files("swap", pair[0], {"target": pair[1]}, out, CFG, progress=False, overwrite=overwrite)
    assert placed == [("out.json", True), ("out.png", True)]  # the new record is there when the picture lands
    assert np.array_equal(read_image(out), read_image(pair[0]))
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(record))
    assert record["output"] == str(out.resolve()) and hidden(tmp_path) == []
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())  # not mkstemp's 0o600


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("appears", ["out.png", "out.json"])
def test_file_appearing_during_the_run_is_never_replaced(appears, tmp_path, pair, fake_run):
    out = tmp_path / "out.png"
    (tmp_path / "out-1.png").write_text("taken")  # the first free name is out-2
    fake_run.during = lambda: (tmp_path / appears).write_text("someone else's")
    with pytest.raises(ImageError, match=f"{appears} appeared during the run.*kept as .*out-2.png and .*out-2.json"):
        runs.run_to_files("swap", pair[0], {"target": pair[1]}, out, CFG, progress=False)
    assert (tmp_path / appears).read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([appears, "out-1.png", "out-2.json", "out-2.png"])
    assert json.loads((tmp_path / "out-2.json").read_text())["output"] == str((tmp_path / "out-2.png").resolve())
    assert np.array_equal(read_image(tmp_path / "out-2.png"), read_image(pair[0]))


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_failing_write_leaves_old_output_and_no_temp(error, tmp_path, pair, fake_run, monkeypatch):
    from PIL import Image

    out = tmp_path / "out.png"
    write_image(out, np.zeros((8, 8, 3), np.uint8))
    out.with_suffix(".json").write_text("{}")
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)):  # the picture, not a format probe in memory
            raise error
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(OptionError if isinstance(error, OSError) else type(error)):  # a full disk: a user's error
        runs.run_to_files("swap", pair[0], {"target": pair[1]}, out, CFG, progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old and hidden(tmp_path) == []


def test_exclusive_placing_without_hard_links(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    write_files([json_file(tmp_path / "a.json", {"a": 1})], overwrite=False)
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}
    with pytest.raises(FileAppeared):
        write_files([json_file(tmp_path / "b.json", {"b": 1}), json_file(tmp_path / "a.json", {"a": 2})],
                    overwrite=False)
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # b.json went back out: all or none


# Runs the command line in a subprocess and sends its own process a signal at one moment: during the optimization
# (the real one, at its first evaluation), while the picture is encoded, or between placing the record and the
# picture. The last two use an instant stand-in for the edit, since the moment is in the writing.
DRIVER = """
import os, signal, sys

sys.path.insert(0, {tests!r})
moment, sig = sys.argv[1], getattr(signal, sys.argv[2])
hit = lambda: os.kill(os.getpid(), sig)
if moment == "optimize":
    from optimswap.optim import solver

    evaluate = solver._History.evaluate
    solver._History.evaluate = lambda self, *a: (hit(), evaluate(self, *a))[1]
else:
    from PIL import Image

    from optimswap import runs
    from optimswap.io import read_image
    from test_outputs import fake_result

    runs.run_edit = lambda edit, source, *a, **k: fake_result(read_image(source))
    if moment == "picture":
        save = Image.Image.save
        Image.Image.save = lambda self, fp, *a, **k: (isinstance(fp, os.PathLike) and hit(), save(self, fp, *a, **k))[1]
    else:
        replace = os.replace
        os.replace = lambda src, dst: (replace(src, dst), str(dst).endswith("out.json") and hit())[0]
from optimswap.cli import run

sys.argv = ["optimswap", *sys.argv[3:]]
run()
"""


@pytest.mark.parametrize("moment", ["optimize", "picture", "between"])
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_leaves_old_or_new_output_whole(signame, moment, tmp_path, pair):
    out = tmp_path / "out.png"
    write_image(out, np.zeros((8, 8, 3), np.uint8))
    out.with_suffix(".json").write_text('{"old": true}')
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    driver = DRIVER.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", driver, moment, signame, "swap", *map(str, pair), "-o", str(out),
                           "--overwrite", *TINY], capture_output=True, text=True, timeout=600)
    expected = {"SIGTERM": (143, "terminated"), "SIGINT": (130, "interrupted")}[signame]
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == expected, done.stderr
    assert "Traceback" not in done.stderr
    assert hidden(tmp_path) == []
    now = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if moment == "between":  # the signal waited until both were placed: all new
        assert now.keys() == old.keys()
        assert json.loads(now["out.json"])["output"] == str(out.resolve())
        assert np.array_equal(read_image(out), read_image(pair[0]))
    else:
        assert now == old


def test_signal_handler_restored_after_cli(cli, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    cli("eval", tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before
