"""The notebooks run headless (nbclient) on tiny settings and read photos from the configured faces folder."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TINY = {"size": 64, "levels": 1, "iters": 3, "n_targets": 2}


@pytest.mark.parametrize("name", ["01_swap_walkthrough.ipynb", "02_ablation.ipynb", "03_stylegan_edits.ipynb",
                                  "04_stylize.ipynb", "05_makeup.ipynb"])
def test_notebook_runs_headless(name, tmp_path, monkeypatch, faces):
    monkeypatch.setenv("OPTIMSWAP_FACES", str(faces))
    monkeypatch.setenv("OPTIMSWAP_NB_PRESET", "fast")
    monkeypatch.setenv("OPTIMSWAP_NB_OVERRIDES", json.dumps(TINY))
    monkeypatch.setenv("OPTIMSWAP_NB_SWEEP", str(tmp_path / "sweep"))
    monkeypatch.setenv("OPTIMSWAP_NB_GRID", json.dumps(["tv=2,8"]))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("source,target\nfaces:identities/mark/01.jpg,faces:identities/tony_blair\n")
    monkeypatch.setenv("OPTIMSWAP_NB_PAIRS", str(pairs))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # it drew its figures
    if name == "02_ablation.ipynb":
        assert (tmp_path / "sweep" / "summary.csv").is_file()
        assert (tmp_path / "sweep" / "nb_plot_tv_weight.png").is_file()
