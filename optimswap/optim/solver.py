"""The optimizers behind every edit, chosen in the config: L-BFGS (strong Wolfe, the default) or Adam with a
warm-up / cosine learning-rate schedule. Both take the tensors a parameterization exposes, call
``objective.refresh`` every ``refresh_every`` iterations, and report the same per-evaluation history and
progress bar."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import torch
from tqdm.auto import tqdm

Render = Callable[[], torch.Tensor]


class Refreshable(Protocol):
    def refresh(self, image: torch.Tensor) -> None: ...

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class Solver(Protocol):
    def run(self, params: list[torch.Tensor], render: Render, objective: Refreshable, iters: int, desc: str = "",
            progress: bool = True) -> list[dict]: ...


class _History:
    """Per-evaluation record of the total and each term, and the progress bar that shows it."""

    def __init__(self, iters: int, desc: str, progress: bool):
        self.rows: list[dict] = []
        self.start = time.perf_counter()
        self.bar = tqdm(total=iters, desc=desc, disable=not progress, leave=True, unit="it")

    def evaluate(self, render: Render, objective: Refreshable) -> torch.Tensor:
        total, parts = objective(render())
        total.backward()
        self.rows.append({"eval": len(self.rows), "total": total.item(), **{k: float(v) for k, v in parts.items()},
                          "seconds": time.perf_counter() - self.start})
        return total

    def advance(self, steps: int) -> None:
        self.bar.update(steps)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in self.rows[-1].items() if k not in ("eval", "seconds")})

    def close(self) -> list[dict]:
        self.bar.close()
        return self.rows


class LBFGS:
    """torch.optim.LBFGS with strong Wolfe line search; its memory is kept across refreshes, since the objective
    changes little between them."""

    def __init__(self, refresh_every: int = 10, history_size: int = 50, lr: float = 1.0):
        self.refresh_every, self.history_size, self.lr = refresh_every, history_size, lr

    def run(self, params: list[torch.Tensor], render: Render, objective: Refreshable, iters: int, desc: str = "",
            progress: bool = True) -> list[dict]:
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.LBFGS(params, lr=self.lr, max_iter=self.refresh_every, history_size=self.history_size,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
        history = _History(iters, desc, progress)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            return history.evaluate(render, objective)

        done = 0
        while done < iters:
            with torch.no_grad():
                objective.refresh(render())
            opt.param_groups[0]["max_iter"] = min(self.refresh_every, iters - done)
            before = opt.state[params[0]].get("n_iter", 0)
            opt.step(closure)
            ran = opt.state[params[0]].get("n_iter", 0) - before
            history.advance(min(max(ran, 1), iters - done))
            done += max(ran, 1)
            if ran == 0:  # converged: L-BFGS made no step
                break
        return history.close()


def ramped_lr(peak: float, t: float, rampup: float, rampdown: float) -> float:
    """Learning rate at progress ``t`` in [0, 1]: linear warm-up over ``rampup``, cosine ramp-down over the last
    ``rampdown`` (the NVlabs StyleGAN2 projector's schedule)."""
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    return peak * (0.5 - 0.5 * math.cos(down * math.pi)) * up


class Adam:
    """Adam with the ``ramped_lr`` schedule over the level's iterations."""

    def __init__(self, lr: float = 0.1, refresh_every: int = 10, rampup: float = 0.05, rampdown: float = 0.25):
        self.lr, self.refresh_every, self.rampup, self.rampdown = lr, refresh_every, rampup, rampdown

    def run(self, params: list[torch.Tensor], render: Render, objective: Refreshable, iters: int, desc: str = "",
            progress: bool = True) -> list[dict]:
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=self.lr)
        history = _History(iters, desc, progress)
        for step in range(iters):
            if step % self.refresh_every == 0:
                with torch.no_grad():
                    objective.refresh(render())
            for group in opt.param_groups:
                group["lr"] = ramped_lr(self.lr, step / iters, self.rampup, self.rampdown)
            opt.zero_grad()
            history.evaluate(render, objective)
            opt.step()
            history.advance(1)
        return history.close()


def make_solver(cfg) -> Solver:
    """The solver an ``EditConfig`` selects."""
    if cfg.optimizer == "lbfgs":
        return LBFGS(cfg.refresh_every, cfg.lbfgs_history, cfg.lr)
    if cfg.optimizer == "adam":
        return Adam(cfg.lr, cfg.refresh_every, cfg.lr_rampup, cfg.lr_rampdown)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
