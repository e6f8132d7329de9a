"""What the benchmarks share: where the test photos are (OPTIMSWAP_FACES, else ../shared/faces beside the
repository) and the repository root, whose package they measure (ahead of any installed copy)."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("OPTIMSWAP_FACES", REPO.parent / "shared" / "faces"))
os.environ.setdefault("OPTIMSWAP_FACES", str(FACES))  # for the faces: prefix of pair lists
sys.path.insert(0, str(REPO))
