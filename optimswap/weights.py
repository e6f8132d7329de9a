"""Model weights fetched by URL into the torch hub cache, with their SHA-256 checked at every load (not only at
download), so that a file changed in the cache is refused before anything reads it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from optimswap.errors import BackendUnavailable


def hub_path(url: str) -> Path:
    """Where the torch hub cache keeps the file behind ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def verified_download(url: str, option: str, offline_hint: str, sha256_prefix: str | None = None) -> Path:
    """The cached file behind ``url``, downloaded if missing. Its SHA-256 must start with ``sha256_prefix``; without
    one, the digest recorded beside the file at its download is the expectation. BackendUnavailable (naming the
    config field ``option``) when it cannot be fetched (with ``offline_hint``) or does not match."""
    path = hub_path(url)
    record = path.with_name(path.name + ".sha256")
    downloaded = not path.is_file()
    if downloaded:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=sha256_prefix, progress=True)
        except Exception as err:  # no network, an HTTP error, a download that does not match its prefix
            raise BackendUnavailable(f"cannot download {url} ({err}); {offline_hint}", option=option) from err
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if downloaded and sha256_prefix is None:
        record.write_text(digest)
    expected = sha256_prefix or (record.read_text().strip() if record.is_file() else digest)
    if not digest.startswith(expected):
        raise BackendUnavailable(f"{path}: SHA-256 {digest[:8]}... does not match {expected[:8]}...; the cached file "
                                 "was changed or is incomplete: delete it to download it again", option=option)
    return path


__all__ = ["hub_path", "verified_download"]
