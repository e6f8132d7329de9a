import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from optimswap.io import read_image

# The tests read the shared test photos; CI and the developers' machines have them beside the repository.
os.environ.setdefault("OPTIMSWAP_FACES", str(Path(__file__).resolve().parents[2] / "shared" / "faces"))


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> torch.device:
    """The tests that matter on a GPU (objective gradients, solver, patch loss, composite, each edit end to end) take
    this: they run on the CPU, and again on CUDA where there is a GPU (skipped elsewhere)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return torch.device(request.param)


def pytest_collection_modifyitems(items):
    """The CUDA cases carry the ``cuda`` marker, so that ``pytest -m cuda`` runs just them."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("device") == "cuda":
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(scope="session")
def faces() -> Path:
    root = Path(os.environ["OPTIMSWAP_FACES"])
    if not (root / "identities").is_dir():
        pytest.fail(f"test photos not found in {root}: set OPTIMSWAP_FACES to a folder laid out like shared/faces")
    return root


@pytest.fixture(scope="session")
def jennifer(faces) -> np.ndarray:
    return read_image(faces / "identities" / "jennifer" / "01.jpg")


@pytest.fixture
def cli(monkeypatch, capsys):
    """Runs the ``optimswap`` entry point in-process as a user would: returns (exit code, stdout, stderr)."""
    from optimswap.cli import run

    def call(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["optimswap", *map(str, args)])
        try:
            run()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


@pytest.fixture
def one_thread():
    """Tiny networks: two threads on a shared machine spend their time waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
