"""Tiny random StyleGAN2 generators for the tests (32 px, few channels, seeded): nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

from optimswap.gan import Architecture, Generator
from optimswap.gan.checkpoint import save_generator

TINY = Architecture(32, (32, 32, 16, 16), z_dim=32, w_dim=32, mapping_layers=2, mapping_hidden=32)


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(TINY)
    with torch.no_grad():
        for layer in g.synthesis.noise_layers():
            layer.noise_strength.fill_(0.1)
        for block in g.synthesis.blocks():  # images mostly inside [-1, 1], as a trained generator's
            block.torgb.weight.mul_(0.25)
        g.mapping.w_avg.copy_(g.mapping(torch.randn(1000, TINY.z_dim)).mean(0))
    return g.eval().requires_grad_(False)


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny generator saved as ``load_generator`` reads it (``save_generator``)."""
    save_generator(path, tiny_generator(seed))
    return path
