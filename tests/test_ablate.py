import json
import os
import signal
import subprocess
import sys

import pytest

from optimswap.ablate import Pair, parse_grid, plan, read_pairs, setting_name, sweep
from optimswap.io import read_image

TINY_GRID = ["size=64", "levels=1", "iters=2", "targets=1"]


@pytest.fixture
def pairs_csv(tmp_path, faces):
    path = tmp_path / "pairs.csv"
    path.write_text(f"source,target\n{faces}/identities/mark/01.jpg,{faces}/identities/tony_blair\n")
    return path


def test_grid_parsing_and_run_names(tmp_path, faces):
    grid = parse_grid(["style=40,80", "tv=0,1e-3", "method=full,paste", "layers=relu3_1+relu4_1", "targets=2"])
    assert grid == {"style_weight": [40.0, 80.0], "tv_weight": [0.0, 0.001], "method": ["full", "paste"],
                    "style_layers": [("relu3_1", "relu4_1")], "n_targets": [2]}
    assert (setting_name({"style_weight": 40.0, "style_layers": ("relu3_1", "relu4_1")})
            == "style=40_layers=relu3_1+relu4_1")
    for bad in ["style", "nope=1", "size=abc", "color_match_result=maybe"]:
        with pytest.raises(ValueError):
            parse_grid([bad])
    runs = plan([Pair("p", faces, {"target": faces})], grid, tmp_path)
    assert len(runs) == 8 and len({r.folder for r in runs}) == 8


def test_pairs_csv_resolves_faces_prefix(tmp_path, faces):
    path = tmp_path / "pairs.csv"
    path.write_text("source,target\nfaces:identities/mark/01.jpg,faces:identities/tony_blair\n")
    (pair,) = read_pairs(path)
    assert pair.source == faces / "identities" / "mark" / "01.jpg" and pair.name == "mark_01-tony_blair"
    path.write_text("source,target\nmissing.jpg,faces:identities/tony_blair\n")
    with pytest.raises(Exception, match="not a photo"):
        read_pairs(path)


# Run by the killed sweep: each run is the real one, then the whole process group (the sweep and its workers) is
# killed with SIGKILL right after the first run finished, so the interruption falls at a known place.
KILLER = '''
import os, signal
from optimswap import ablate

real_execute = ablate.execute


def execute(spec):
    real_execute(spec)
    os.killpg(os.getpgid(0), signal.SIGKILL)
'''
DRIVER = '''
if __name__ == "__main__":  # the sweep's spawned workers import this file again
    from optimswap import ablate
    import killer
    ablate.execute = killer.execute
    from optimswap.cli import run
    run()
'''


def test_interrupted_sweep_resumes_with_only_the_rest(tmp_path, pairs_csv):
    out = tmp_path / "sweep"
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "driver.py").write_text(DRIVER)
    sweep_args = ["ablate", "--pairs", str(pairs_csv), "-o", str(out), "--preset", "fast", "-q",
                  *(f"--grid={g}" for g in TINY_GRID), "--grid", "tv=1,2,3"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, str(tmp_path / "driver.py"), *sweep_args], start_new_session=True,
                            capture_output=True, text=True, timeout=600, env=env)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("out.json")}
    assert len(finished) == 1
    done = subprocess.run([sys.executable, "-m", "optimswap.cli", *sweep_args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 3 runs already finished" in done.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not redone
    records = list(out.rglob("out.json"))
    assert len(records) == 3
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 4 and summary[0].startswith("pair,setting,size")
    assert read_image(out / "contact_sheet.png").shape[0] > 100
    assert (out / "plot_tv.png").is_file()


def test_submitit_executor_in_local_mode(tmp_path, pairs_csv):
    out = tmp_path / "sweep"
    runs = sweep(read_pairs(pairs_csv), parse_grid(TINY_GRID), out, "fast", executor="submitit", cluster="local",
                 progress=False)
    (run,) = runs
    assert run.done()
    row = json.loads((run.folder / "eval.json").read_text())
    assert row["error"] == "" and row["psnr_outside"] == float("inf")
    assert list((out / "submitit").glob("*_log.out"))  # it went through submitit's job machinery


def test_a_sweep_worker_killed_by_sigterm_while_writing_leaves_no_temp_file(tmp_path):
    # The worker's initializer, then a write that is interrupted half-way by SIGTERM.
    driver = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from optimswap.ablate import _exit_on_sigterm\n"
        "from optimswap.io.image import write_files\n"
        "_exit_on_sigterm()\n"
        "def half(tmp):\n"
        "    Path(tmp).write_text('half a file')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        f"write_files([(Path({str(tmp_path / 'r.json')!r}), half)])\n"
    )
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert list(tmp_path.iterdir()) == []
