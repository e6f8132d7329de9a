import hashlib

import pytest

from optimswap import data
from optimswap.errors import OptionError


def test_fetch_seeds_cache_from_local_copy_with_checksums(tmp_path, monkeypatch, faces):
    monkeypatch.setenv("OPTIMSWAP_DATA", str(tmp_path))
    paths = data.fetch("tony_blair", faces)
    assert len(paths) == 8 and all(p.is_relative_to(tmp_path) for p in paths)
    rows = {r["file"]: r["sha256"] for r in data.manifest()}
    for p in paths:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == rows[str(p.relative_to(tmp_path))]
    # A corrupted cached file is replaced.
    paths[0].write_bytes(b"garbage")
    again = data.fetch("tony_blair", faces)
    assert hashlib.sha256(again[0].read_bytes()).hexdigest() == rows["identities/tony_blair/01.jpg"]


def test_manifest_ships_with_the_package_and_locations_come_from_arguments(tmp_path, monkeypatch):
    assert len(data.manifest()) >= 30 and "angelina" in data.sets()
    monkeypatch.delenv("OPTIMSWAP_FACES", raising=False)
    assert data.faces_dir() is None  # no location guessed from the repository layout
    with pytest.raises(OptionError, match="identities"):
        data.faces_dir(tmp_path)


def test_unknown_set_lists_the_available_ones():
    with pytest.raises(OptionError, match="angelina"):
        data.fetch("nobody")
