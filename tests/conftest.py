from pathlib import Path

import numpy as np
import pytest

from optimswap.data import local_faces_dir
from optimswap.io import read_image


@pytest.fixture(scope="session")
def faces() -> Path:
    root = local_faces_dir()
    if root is None:
        pytest.fail("test photos not found: set OPTIMSWAP_FACES to a folder laid out like shared/faces")
    return root


@pytest.fixture(scope="session")
def jennifer(faces) -> np.ndarray:
    return read_image(faces / "identities" / "jennifer" / "01.jpg")
