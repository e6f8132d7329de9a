"""Latent directions for attribute edits: SeFa in closed form, InterFaceGAN-style fitted ones, external files.

A direction is a unit vector in W (w_dim,); an edit adds ``strength * direction`` to every layer of a latent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from optimswap.errors import OptionError
from optimswap.gan.stylegan2 import Generator


def style_weights(g: Generator) -> torch.Tensor:
    """The style affines of every conv and toRGB layer stacked as rows: (sum of channels, w_dim)."""
    affines = [a for b in g.synthesis.blocks() for a in (*(layer.affine for layer in b.layers()), b.torgb.affine)]
    return torch.cat([a.weight for a in affines])


def sefa(g: Generator, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """SeFa (Shen & Zhou 2021): the top-``k`` eigenvectors (k, w_dim) and eigenvalues of A^T A, where A stacks the
    style affines with each row (one style channel) scaled to unit norm, as in the authors' ``factorize_weight``."""
    a = style_weights(g).double()
    a = a / a.norm(dim=1, keepdim=True)
    values, vectors = torch.linalg.eigh(a.T @ a)
    order = values.argsort(descending=True)[:k]
    return vectors[:, order].T.float(), values[order].float()


def fit_direction(latents: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3, iters: int = 200) -> torch.Tensor:
    """InterFaceGAN (Shen et al. 2020) with logistic regression instead of a linear SVM: the unit normal of the
    separating hyperplane between latents (n, w_dim) labelled True and False."""
    if labels.all() or not labels.any():
        raise OptionError("labels", "need latents of both classes to fit a direction")
    x = (latents - latents.mean(0)) / latents.std(0).clamp_min(1e-8)
    y = labels.float()
    normal = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([normal, bias], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ normal + bias, y) + l2 * normal.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    # Back from standardised coordinates to W: the hyperplane's normal scales by 1 / std.
    direction = normal.detach() / latents.std(0).clamp_min(1e-8)
    return direction / direction.norm()


@torch.no_grad()
def sample_and_score(g: Generator, scorer: Callable[[torch.Tensor], torch.Tensor], n: int, seed: int = 0,
                     batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` mapped latents (n, w_dim) and the scorer's values on their images in [0, 1] (batches of (B, 3, R, R))."""
    z = torch.randn(n, g.arch.z_dim, generator=torch.Generator().manual_seed(seed)).to(g.w_avg.device)
    w = g.mapping(z)
    scores = [scorer((g.synthesis(chunk[:, None].expand(-1, g.num_ws, -1)) + 1) / 2) for chunk in w.split(batch)]
    return w, torch.cat(scores)


def fit_from_scorer(g: Generator, scorer: Callable[[torch.Tensor], torch.Tensor], n: int = 2000,
                    share: float = 0.3, seed: int = 0) -> torch.Tensor:
    """A direction from an offline scorer on generated images: the top and bottom ``share`` of ``n`` samples are the
    two classes (the middle is ambiguous, as in InterFaceGAN)."""
    w, scores = sample_and_score(g, scorer, n, seed)
    order = scores.argsort()
    keep = int(share * n)
    chosen = torch.cat([order[:keep], order[-keep:]])
    return fit_direction(w[chosen], torch.arange(2 * keep) >= keep)


def conditional(direction: torch.Tensor, *conditions: torch.Tensor) -> torch.Tensor:
    """``direction`` with its components along ``conditions`` projected out (InterFaceGAN's conditional edit), so
    editing it leaves those attributes' scores unchanged to first order."""
    basis = torch.linalg.qr(torch.stack(conditions, dim=1)).Q
    d = direction - basis @ (basis.T @ direction)
    return d / d.norm()


def load_direction(path: str | Path) -> torch.Tensor:
    """A direction from a ``.npy`` or a ``.pt`` (tensor, weights_only) file: (w_dim,) or (1, w_dim); unit norm."""
    path = Path(path)
    if not path.is_file():
        raise OptionError("direction", f"direction file {path} not found")
    raw = np.load(path, allow_pickle=False) if path.suffix == ".npy" else torch.load(path, weights_only=True)
    d = torch.as_tensor(raw, dtype=torch.float32).reshape(-1)
    return d / d.norm()


def edit_latent(latent: torch.Tensor, moves: Sequence[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """``latent`` (1, w_dim) or (1, num_ws, w_dim) moved by ``strength * direction`` for each pair (every layer)."""
    out = latent.clone()
    for direction, strength in moves:
        out = out + strength * direction.to(out)
    return out
