"""Tiny random StyleGAN2 generators for the tests (32 px, few channels, seeded): nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from optimswap.gan import Architecture, Generator, untrained_generator
from optimswap.gan.checkpoint import save_generator

TINY = Architecture(32, (32, 32, 16, 16), z_dim=32, w_dim=32, mapping_layers=2, mapping_hidden=32)


def tiny_generator(seed: int = 0) -> Generator:
    return untrained_generator(TINY, seed)


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny generator saved as ``load_generator`` reads it (``save_generator``)."""
    save_generator(path, tiny_generator(seed))
    return path
