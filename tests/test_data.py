import hashlib

from optimswap import data


def test_fetch_seeds_cache_from_local_copy_with_checksums(tmp_path, monkeypatch, faces):
    monkeypatch.setenv("OPTIMSWAP_DATA", str(tmp_path))
    monkeypatch.setenv("OPTIMSWAP_FACES", str(faces))
    paths = data.fetch("tony_blair")
    assert len(paths) == 8 and all(p.is_relative_to(tmp_path) for p in paths)
    rows = {r["file"]: r["sha256"] for r in data.manifest()}
    for p in paths:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == rows[str(p.relative_to(tmp_path / "faces"))]
    # A corrupted cached file is replaced.
    paths[0].write_bytes(b"garbage")
    again = data.fetch("tony_blair")
    assert hashlib.sha256(again[0].read_bytes()).hexdigest() == rows["identities/tony_blair/01.jpg"]


def test_unknown_set_lists_the_available_ones():
    import pytest

    with pytest.raises(ValueError, match="angelina"):
        data.fetch("nobody")
