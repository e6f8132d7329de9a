"""Sample photos listed in reference_faces/manifest.tsv, fetched with checksums into a local cache.

Cache: $OPTIMSWAP_DATA (default ~/.cache/optimswap). Offline machines seed it from a local copy of the
photos: $OPTIMSWAP_FACES, else ../shared/faces beside the repository or the working directory.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = REPO_ROOT / "reference_faces" / "manifest.tsv"


def cache_dir() -> Path:
    return Path(os.environ.get("OPTIMSWAP_DATA", Path.home() / ".cache" / "optimswap"))


def local_faces_dir() -> Path | None:
    """A local folder laid out like shared/faces (identities/<person>/NN.jpg), if one is present."""
    env = os.environ.get("OPTIMSWAP_FACES")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "faces", Path.cwd().parent / "shared" / "faces"]
    return next((c for c in candidates if (c / "identities").is_dir()), None)


def manifest() -> list[dict]:
    with open(MANIFEST, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def sets() -> list[str]:
    return sorted({row["set"] for row in manifest()})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_one(row: dict, root: Path, seed: Path | None) -> Path:
    dest = root / row["file"]
    if dest.is_file() and _sha256(dest) == row["sha256"]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    local = seed / row["file"] if seed else None
    if local is not None and local.is_file() and _sha256(local) == row["sha256"]:
        shutil.copyfile(local, dest)
        return dest
    import pooch

    # Files downscaled for shared/faces have another hash upstream; those are fetched unverified.
    known = row["sha256"] if row["upstream_identical"] == "yes" else None
    if known is None:
        log.warning("%s: no upstream checksum recorded, downloading unverified", row["file"])
    return Path(pooch.retrieve(row["url"], known_hash=known, fname=dest.name, path=dest.parent, progressbar=False))


def fetch(name: str) -> list[Path]:
    """Local paths of the photos of sample set ``name`` (a person), fetching what is missing."""
    rows = [r for r in manifest() if r["set"] == name]
    if not rows:
        raise ValueError(f"unknown sample set {name!r}; available: {sets()}")
    root, seed = cache_dir() / "faces", local_faces_dir()
    return [_fetch_one(r, root, seed) for r in rows]
