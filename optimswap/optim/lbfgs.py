"""L-BFGS over an image with periodic objective refreshes (re-matching of nearest neighbours)."""

from __future__ import annotations

import time
from typing import Callable

import torch
from tqdm.auto import tqdm


def run_lbfgs(param: torch.Tensor, render: Callable[[torch.Tensor], torch.Tensor], objective, iters: int,
              refresh_every: int, history_size: int = 50, desc: str = "", progress: bool = True) -> list[dict]:
    """Minimise ``objective(render(param))`` in place; returns the per-evaluation loss history.

    Every ``refresh_every`` iterations ``objective.refresh(image)`` is called (CNNMRF re-matching); the
    L-BFGS memory is kept across refreshes since the objective changes little between them.
    """
    param.requires_grad_(True)
    opt = torch.optim.LBFGS([param], lr=1.0, max_iter=refresh_every, history_size=history_size,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    history: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(total=iters, desc=desc, disable=not progress, leave=True, unit="it")

    def closure():
        opt.zero_grad()
        total, parts = objective(render(param))
        total.backward()
        history.append({"eval": len(history), "total": total.item(), **{k: float(v) for k, v in parts.items()},
                        "seconds": time.perf_counter() - start})
        return total

    done = 0
    while done < iters:
        with torch.no_grad():
            objective.refresh(render(param))
        opt.param_groups[0]["max_iter"] = min(refresh_every, iters - done)
        before = opt.state[param].get("n_iter", 0)
        opt.step(closure)
        ran = opt.state[param].get("n_iter", 0) - before
        bar.update(min(max(ran, 1), iters - done))
        done += max(ran, 1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in history[-1].items() if k not in ("eval", "seconds")})
        if ran == 0:  # converged: L-BFGS made no step
            break
    bar.close()
    return history
