"""Latent directions for attribute edits: SeFa in closed form, InterFaceGAN-style fitted ones, external files.

A direction is a unit vector in W (w_dim,); an edit adds ``strength * direction`` to every layer of a latent.
``optimswap directions sefa|fit`` write named directions into one ``.pt`` file (``save_directions``); ``edit
--attr NAME=STRENGTH`` takes them from there, ``--direction FILE=STRENGTH`` from an external single-direction file.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from optimswap.errors import OptimswapError, OptionError
from optimswap.gan.stylegan2 import Generator

MIN_SCORED = 20  # generated images with a usable score needed to fit a direction


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
                     batch: int = 64, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` mapped latents (n, w_dim) and the scorer's values on their images in [0, 1] (batches of (B, 3, R, R));
    the scorer gives (B,) or (B, attributes), NaN for an image it cannot score."""
    z = torch.randn(n, g.arch.z_dim, generator=torch.Generator().manual_seed(seed)).to(g.w_avg.device)
    w = g.mapping(z)
    scores = [scorer((g.synthesis(chunk[:, None].expand(-1, g.num_ws, -1)) + 1) / 2)
              for chunk in tqdm(w.split(batch), desc="sample and score", disable=not progress, unit="batch")]
    return w, torch.cat(scores).cpu()


def fit_from_scores(w: torch.Tensor, scores: torch.Tensor, share: float = 0.3) -> torch.Tensor:
    """A direction from latents and their scores: the top and bottom ``share`` of the scored ones (NaN: unscored)
    are the two classes (the middle is ambiguous, as in InterFaceGAN)."""
    scored = torch.isfinite(scores).nonzero().reshape(-1)
    if len(scored) < MIN_SCORED:
        raise OptimswapError(f"only {len(scored)} of {len(scores)} generated images could be scored (the landmark "
                             f"scorers need a face found); fitting needs at least {MIN_SCORED}: a generator of faces, "
                             "or more samples")
    order = scored[scores[scored].argsort()]
    keep = max(1, int(share * len(scored)))
    chosen = torch.cat([order[:keep], order[-keep:]])
    return fit_direction(w[chosen.to(w.device)], torch.arange(2 * keep) >= keep)


def fit_from_scorer(g: Generator, scorer: Callable[[torch.Tensor], torch.Tensor], n: int = 2000,
                    share: float = 0.3, seed: int = 0) -> torch.Tensor:
    """A direction from an offline scorer on ``n`` generated images (see ``fit_from_scores``)."""
    return fit_from_scores(*sample_and_score(g, scorer, n, seed), share)


def conditional(direction: torch.Tensor, *conditions: torch.Tensor) -> torch.Tensor:
    """``direction`` with its components along ``conditions`` projected out (InterFaceGAN's conditional edit), so
    editing it leaves those attributes' scores unchanged to first order."""
    basis = torch.linalg.qr(torch.stack(conditions, dim=1)).Q
    d = direction - basis @ (basis.T @ direction)
    return d / d.norm()


def _read(path: str | Path, option: str) -> Any:
    """A ``.npy`` array or a ``.pt`` file's content (weights_only); OptionError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(option, f"direction file {path} not found")
    try:
        return np.load(path, allow_pickle=False) if path.suffix == ".npy" else torch.load(path, weights_only=True)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise OptionError(option, f"{path}: not a direction file ({str(err).splitlines()[0]})") from None


def _unit(raw: Any, where: str, option: str) -> torch.Tensor:
    d = torch.as_tensor(raw, dtype=torch.float32).reshape(-1)
    if not (d.numel() and torch.isfinite(d).all() and d.norm() > 0):
        raise OptionError(option, f"{where}: not a usable direction (empty, zero or not finite)")
    return d / d.norm()


def load_direction(path: str | Path) -> torch.Tensor:
    """A direction from a ``.npy`` or a ``.pt`` (tensor, weights_only) file: (w_dim,) or (1, w_dim); unit norm. A
    file of named directions (``save_directions``) holding just one gives that one."""
    raw = _read(path, "direction")
    if isinstance(raw, dict):
        named = read_directions(path, "direction")
        if len(named) != 1:
            raise OptionError("direction", f"{path} holds {len(named)} named directions ({', '.join(named)}); "
                                           "pick one by its name from the file of named directions")
        return next(iter(named.values()))
    if not isinstance(raw, (np.ndarray, torch.Tensor)):
        raise OptionError("direction", f"{path}: not a direction file (holds a {type(raw).__name__})")
    return _unit(raw, str(path), "direction")


def save_directions(path: Path, directions: Mapping[str, torch.Tensor], about: dict) -> None:
    """Named unit directions and what made them (JSON-like ``about``), for ``torch.load(weights_only=True)``."""
    torch.save({"directions": {k: v.detach().cpu().float() for k, v in directions.items()}, **about}, path)


def read_directions(path: str | Path, option: str = "directions") -> dict[str, torch.Tensor]:
    """The named directions of a file that ``save_directions`` wrote."""
    raw = _read(path, option)
    named = raw.get("directions") if isinstance(raw, dict) else None
    if not isinstance(named, dict) or not named:
        raise OptionError(option, f"{path}: no named directions in it (write one with optimswap directions sefa|fit)")
    return {str(k): _unit(v, f"{path}: {k}", option) for k, v in named.items()}


def parse_move(text: str, option: str) -> tuple[str, float]:
    """``NAME=STRENGTH`` (``smile=+2``, ``dirs/age.npy=-1.5``) -> (name, strength); OptionError naming ``option``."""
    name, sep, value = text.rpartition("=")
    try:
        strength = float(value)
    except ValueError:
        strength = math.nan
    if not sep or not name.strip() or not math.isfinite(strength):
        raise OptionError(option, f"expected NAME=STRENGTH with a finite number, e.g. smile=+2, got {text!r}")
    return name.strip(), strength


@dataclass(frozen=True)
class Move:
    """A step along one direction: its name (attribute or file), where it came from, strength and unit vector."""

    name: str
    source: str
    strength: float
    direction: torch.Tensor

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "strength": self.strength}


def resolve_moves(attr: Sequence[str], direction: Sequence[str], directions: str, keep: Sequence[str],
                  w_dim: int) -> list[Move]:
    """The moves asked for: ``attr`` NAME=STRENGTH from the file of named ``directions``, ``direction``
    FILE=STRENGTH from external files; each made orthogonal to the named ``keep`` directions (conditional edit).
    OptionError naming the option and the file for anything missing, malformed or of another generator's size."""
    attrs = [parse_move(a, "attr") for a in attr]
    files = [parse_move(d, "direction") for d in direction]
    named: dict[str, torch.Tensor] = {}
    if attrs or keep:
        if not directions:
            wanted = ", ".join(dict.fromkeys([n for n, _ in attrs] + list(keep)))
            raise OptionError("directions", f"named attributes ({wanted}) need a file of named directions, fitted "
                                            "on this generator or SeFa's (save_directions)")
        named = read_directions(directions)
        for option, name in [("attr", n) for n, _ in attrs] + [("keep", k) for k in keep]:
            if name not in named:
                raise OptionError(option, f"{directions} has no direction {name!r} (it has {', '.join(named)}); "
                                          f"fit one for {name!r} on this generator")
        if any(v.numel() != w_dim for v in named.values()):
            raise OptionError("directions", f"{directions}: its directions have {next(iter(named.values())).numel()} "
                                            f"values but the generator's W has {w_dim} (made for another generator)")
        if set(keep) & {n for n, _ in attrs}:
            raise OptionError("keep", f"{sorted(set(keep) & {n for n, _ in attrs})} both moved and kept")
    source = str(Path(directions).resolve()) if directions else ""
    moves = [Move(n, source, s, named[n]) for n, s in attrs]
    for f, s in files:
        d = load_direction(f)
        if d.numel() != w_dim:
            raise OptionError("direction", f"{f}: {d.numel()} values but the generator's W has {w_dim}")
        moves.append(Move(Path(f).name, str(Path(f).resolve()), s, d))
    if keep:
        moves = [Move(m.name, m.source, m.strength, conditional(m.direction, *(named[k] for k in keep)))
                 for m in moves]
    return moves


def edit_latent(latent: torch.Tensor, moves: Sequence[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """``latent`` (1, w_dim) or (1, num_ws, w_dim) moved by ``strength * direction`` for each pair (every layer)."""
    out = latent.clone()
    for direction, strength in moves:
        out = out + strength * direction.to(out)
    return out
