"""bench/gpu_check.py, the check a lent GPU runs, on the CPU at its tiny settings: every step runs and lands in the
table and the output folder (on a machine without a GPU, asking for CUDA is a one-line error)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_the_gpu_check_runs_every_step_on_the_cpu_and_writes_one_table(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    steps = [r["step"] for r in rows]
    for start in ("device tests", "swap 64 px, 2 photos", "makeup 64 px", "stylize 64 px", "invert 32 px",
                  "demo swap", "quality swap", "encoder pass with TF32"):
        assert sum(s.startswith(start) for s in steps) == 1, (start, steps)
    assert not [r for r in rows if "FAILED" in r.get("note", "")]
    measured = [r for r in rows if r["step"] != "device tests"]
    assert all(r["seconds"] > 0 and 0 < r["ratio"] < float("inf") and r.get("peak_mib", 0) >= 0 for r in measured)
    tf32 = next(r for r in rows if r["step"].startswith("encoder pass with TF32"))
    assert tf32["features_difference"] == 0 == tf32["gradient_difference"]  # no TF32 on a CPU
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in done.stdout and len(table.splitlines()) == 2 + len(rows)  # one table, printed and written
    for name in ("demo", "quality"):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert (tmp_path / f"{name}.png").is_file() and record["options"]["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU")
def test_asking_for_cuda_without_a_gpu_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "gpu_check: device 'cuda' requested but no CUDA GPU is available"]
