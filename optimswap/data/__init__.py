"""Sample photos (the manifest ``manifest.tsv`` beside this file: set, file, SHA-256, source URL), fetched with
pooch into a checksummed cache.

Cache: ``$OPTIMSWAP_DATA``, else the user cache folder (``pooch.os_cache``). An offline machine seeds the cache
from a local copy laid out like the manifest's files: the ``faces`` argument, else ``$OPTIMSWAP_FACES``.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from importlib import resources
from pathlib import Path

import pooch

from optimswap.errors import OptimswapError, OptionError
from optimswap.io.image import check_writable

log = logging.getLogger(__name__)


def manifest() -> list[dict]:
    text = resources.files(__package__).joinpath("manifest.tsv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


def sets() -> list[str]:
    return sorted({row["set"] for row in manifest()})


def faces_dir(faces: str | os.PathLike | None = None) -> Path | None:
    """A local folder laid out like the manifest (identities/<person>/NN.jpg): ``faces``, else $OPTIMSWAP_FACES."""
    chosen = faces or os.environ.get("OPTIMSWAP_FACES")
    if chosen is None:
        return None
    if not (Path(chosen) / "identities").is_dir():
        raise OptionError("faces", f"{chosen} has no identities/ folder (expected the layout of the sample manifest)")
    return Path(chosen)


def check_cache() -> None:
    """OptimswapError naming $OPTIMSWAP_DATA when it is not a folder where files can be made (a file, no
    permission, a read-only place); a missing folder is made when fetching."""
    chosen = os.environ.get("OPTIMSWAP_DATA")
    if chosen:
        try:
            check_writable(chosen, folder=True, option="OPTIMSWAP_DATA")
        except OptionError as err:
            raise OptimswapError(f"$OPTIMSWAP_DATA: {err.reason} (the sample photos' cache folder)") from None


def registry() -> pooch.Pooch:
    """The sample photos as a pooch registry. Files downscaled for the local copy have another hash upstream;
    those are registered without one (downloaded unverified)."""
    check_cache()
    rows = manifest()
    return pooch.create(
        path=pooch.os_cache("optimswap"), base_url="", env="OPTIMSWAP_DATA",
        registry={r["file"]: f"sha256:{r['sha256']}" if r["upstream_identical"] == "yes" else None for r in rows},
        urls={r["file"]: r["url"] for r in rows})


def _seed(cache: Path, file: str, sha256: str, faces: Path) -> None:
    """Copy a verified local file into the cache, where pooch then finds it instead of downloading."""
    local, dest = faces / file, cache / file
    if dest.is_file() and pooch.file_hash(str(dest)) == sha256:
        return
    if local.is_file() and pooch.file_hash(str(local)) == sha256:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)


def fetch(name: str, faces: str | os.PathLike | None = None) -> list[Path]:
    """Local paths of the photos of sample set ``name`` (a person), fetching what is missing."""
    rows = [r for r in manifest() if r["set"] == name]
    if not rows:
        raise OptionError("set", f"unknown sample set {name!r}; available: {', '.join(sets())}")
    samples, local = registry(), faces_dir(faces)
    cache = Path(samples.abspath)
    paths = []
    for row in rows:
        if local is not None:
            _seed(cache, row["file"], row["sha256"], local)
        dest = cache / row["file"]
        if dest.is_file() and pooch.file_hash(str(dest)) == row["sha256"]:
            paths.append(dest)  # the local copy's file (may differ from a downscaled upstream one)
        else:
            paths.append(Path(samples.fetch(row["file"])))
    return paths
