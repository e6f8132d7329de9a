"""The optimizers behind every edit, chosen in the config: L-BFGS (strong Wolfe, the default) or Adam with a
warm-up / cosine learning-rate schedule. Both take the tensors a parameterization exposes, call
``objective.refresh`` every ``refresh_every`` iterations, and report the same per-evaluation history and
progress bar.

Faults: an evaluation with a non-finite loss or gradient (or, for Adam, a loss exploding above ten times the
level's start) sends the parameters back to the best ones since the last refresh and the run goes on with half the
step (L-BFGS also forgets its history); after ``MAX_RECOVERIES`` such restarts in a level it stops with
``OptimizationError``. Each restart is listed in the solver's ``recoveries``."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import torch
from torch.optim.lbfgs import _strong_wolfe  # torch.optim.LBFGS's own line search (private; torch pinned)
from tqdm.auto import tqdm

from optimswap.errors import OptimizationError

Render = Callable[[], torch.Tensor]
MAX_RECOVERIES = 5  # restarts per level with a halved step before giving up
DIVERGED = 10.0  # Adam: a loss above this many times the level's start (and the last good loss) is a blow-up

log = logging.getLogger(__name__)


class Refreshable(Protocol):
    def refresh(self) -> None:
        """What depends on the image but is held fixed between refreshes (patch matches) is recomputed at the next
        evaluation."""

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class Solver(Protocol):
    recoveries: list[dict]  # the last run's restarts after faults: evaluation, reason, new step size

    def run(self, params: list[torch.Tensor], render: Render, objective: Refreshable, iters: int, desc: str = "",
            progress: bool = True) -> list[dict]: ...


class _Fault(Exception):
    """An evaluation the solver must not go on from."""


class _Guard:
    """Checks each evaluation for faults, keeps the best parameters since the last refresh to step back to, and
    lists the restarts."""

    def __init__(self, params: list[torch.Tensor], desc: str, diverge: bool):
        self.params, self.desc, self.diverge = params, desc, diverge
        self.saved = [p.detach().clone() for p in params]
        self.saved_loss = math.inf
        self.first: float | None = None  # the level's first loss
        self.last = math.inf  # the last good loss
        self.recoveries: list[dict] = []

    def check(self, loss: float, finite_gradient: bool) -> None:
        if not math.isfinite(loss):
            raise _Fault(f"the loss is {loss}")
        if not finite_gradient:
            raise _Fault("the gradient is not finite")
        if self.first is None:
            self.first = loss
        elif self.diverge and loss > DIVERGED * max(abs(self.first), abs(self.last)):
            raise _Fault(f"the loss exploded to {loss:.4g} (last good {self.last:.4g})")
        self.last = loss
        if loss < self.saved_loss:
            self.saved_loss = loss
            for saved, p in zip(self.saved, self.params, strict=True):
                saved.copy_(p.detach())

    def refreshed(self) -> None:
        """The objective changed: losses from before are no measure for the saved parameters any more."""
        self.saved_loss = math.inf

    def step_back(self, fault: _Fault, lr: float, evaluation: int) -> float:
        """Restore the saved parameters; returns the halved step size. OptimizationError after MAX_RECOVERIES."""
        if len(self.recoveries) == MAX_RECOVERIES:
            raise self._give_up(f"{fault} at evaluation {evaluation}", lr)
        with torch.no_grad():
            for p, saved in zip(self.params, self.saved, strict=True):
                p.copy_(saved)
        self.recoveries.append({"eval": evaluation, "reason": str(fault), "lr": lr / 2})
        log.warning("%s: %s at evaluation %d; back to the last good values with lr %.3g", self.desc, fault,
                    evaluation, lr / 2)
        return lr / 2

    def finish(self, evaluations: int, lr: float) -> None:
        """The level ran out of iterations without one good evaluation: its result would silently be its start."""
        if evaluations == 0 and self.recoveries:
            raise self._give_up(f"{self.recoveries[-1]['reason']} at every evaluation", lr)

    def _give_up(self, what: str, lr: float) -> OptimizationError:
        return OptimizationError(f"{what}, still after {len(self.recoveries)} restarts from the last good values "
                                 f"with the step halved each time (lr {lr:.3g}); try a smaller lr")


class _History:
    """Per-evaluation record of the total and each term, and the progress bar that shows it."""

    def __init__(self, iters: int, desc: str, progress: bool):
        self.rows: list[dict] = []
        self.start = time.perf_counter()
        self.bar = tqdm(total=iters, desc=desc, disable=not progress, leave=True, unit="it")
        self.shown = 0

    def evaluate(self, render: Render, objective: Refreshable, guard: _Guard) -> float:
        """One evaluation with its gradient; a faulty one raises ``_Fault`` and stays out of the history."""
        total, parts = objective(render())
        total.backward()
        finite = [p.grad.isfinite().all() for p in guard.params if p.grad is not None]
        # One transfer from the device per evaluation (each is a GPU sync): the total, every term and whether each
        # gradient is finite, together. Float64 holds any of them exactly.
        value, *rest = torch.stack([total.detach().double(), *(v.double() for v in parts.values()),
                                    *(f.double() for f in finite)]).tolist()
        terms, finite_gradient = rest[:len(parts)], all(rest[len(parts):])
        guard.check(value, finite_gradient)
        self.rows.append({"eval": len(self.rows), "total": value, **dict(zip(parts, terms, strict=True)),
                          "seconds": time.perf_counter() - self.start})
        return value

    def advance_to(self, iterations: int) -> None:
        """The bar shows ``iterations`` completed."""
        self.bar.update(iterations - self.shown)
        self.shown = iterations
        if self.rows:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in self.rows[-1].items() if k not in ("eval", "seconds")})

    def close(self) -> list[dict]:
        self.bar.close()
        return self.rows


def _flat(tensors: list[torch.Tensor | None], like: list[torch.Tensor]) -> torch.Tensor:
    """One vector of ``tensors`` (None: zeros shaped as its counterpart in ``like``), in float32 at least: L-BFGS's
    curvature pairs and dot products lose too much in half precision."""
    return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1).to(torch.promote_types(p.dtype,
                                                                                                   torch.float32))
                      for t, p in zip(tensors, like, strict=True)])


def _assign(params: list[torch.Tensor], flat: torch.Tensor) -> None:
    with torch.no_grad():
        offset = 0
        for p in params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


class LBFGS:
    """L-BFGS with the strong Wolfe line search of torch.optim.LBFGS, run over a level's iterations at once.

    The objective is refreshed at the first evaluation of every ``refresh_every``-th iteration, inside its line
    search: a refresh costs no evaluation of its own (torch.optim.LBFGS would re-evaluate the current point, one
    evaluation in ten). The curvature pair of that iteration is left out of the memory, since its two gradients
    belong to different objectives; the rest of the memory is kept, since the objective changes little. Only
    non-finite evaluations are faults: the line search itself rejects a step that raises the loss."""

    TOLERANCE_GRAD, TOLERANCE_CHANGE = 1e-9, 1e-12  # converged: no gradient, or no change of step or loss

    def __init__(self, refresh_every: int = 10, history_size: int = 50, lr: float = 1.0):
        self.refresh_every, self.history_size, self.lr = refresh_every, history_size, lr
        self.recoveries: list[dict] = []

    def run(self, params: list[torch.Tensor], render: Render, objective: Refreshable, iters: int, desc: str = "",
            progress: bool = True) -> list[dict]:
        for p in params:
            p.requires_grad_(True)
        lr = self.lr
        history, guard = _History(iters, desc, progress), _Guard(params, desc, diverge=False)
        self.recoveries = guard.recoveries
        refresh = True  # the next evaluation refreshes the objective first

        def evaluate(x: torch.Tensor, t: float, d: torch.Tensor) -> tuple[float, torch.Tensor]:
            nonlocal refresh
            _assign(params, x + t * d)
            if refresh:
                objective.refresh()
                guard.refreshed()
                refresh = False
            for p in params:
                p.grad = None
            loss = history.evaluate(render, objective, guard)
            return loss, _flat([p.grad for p in params], params)

        x = _flat([p.detach() for p in params], params)
        # (s, y, 1/y.s); the scalars stay on the device as 0-d float64 tensors: a float() each would be a GPU sync,
        # a hundred per iteration in the two-loop recursion with a full memory (float64: the arithmetic of the
        # Python floats they replace, so results stay as they were).
        memory: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = deque(maxlen=self.history_size)
        loss = gradient = None
        scale: float | torch.Tensor = 1.0  # the initial inverse Hessian's, y.s / y.y of the newest pair
        it = 0
        while it < iters:
            try:
                if gradient is None:  # the start, or after a fault
                    loss, gradient = evaluate(x, 0.0, torch.zeros_like(x))
                if gradient.abs().max() <= self.TOLERANCE_GRAD:
                    break
                direction = self._direction(gradient, memory, scale)
                # With no memory, a step of unit length along -gradient, as L-BFGS-B begins: torch's 1/|g|_1 is
                # so short on an image that the line search spent two more evaluations stretching it.
                step = lr if memory else min(1.0, 1.0 / float(gradient.norm())) * lr
                slope = float(gradient.dot(direction))
                if slope > -self.TOLERANCE_CHANGE:
                    break
                refresh = refresh or (it > 0 and it % self.refresh_every == 0)
                refreshed = refresh
                new_loss, new_gradient, step, _ = _strong_wolfe(evaluate, x, step, direction, loss, gradient, slope)
            except _Fault as fault:
                lr = guard.step_back(fault, lr, len(history.rows))
                x = _flat([p.detach() for p in params], params)
                memory.clear()  # it holds the faulty steps
                loss, gradient, scale = None, None, 1.0
                it += 1
                history.advance_to(it)
                continue
            s = step * direction
            x = x + s
            _assign(params, x)
            if not refreshed:
                y = new_gradient - gradient
                ys = y.dot(s).double()
                if ys > 1e-10:
                    memory.append((s, y, 1.0 / ys))
                    scale = ys / y.dot(y).double()
            converged = float(s.abs().max()) <= self.TOLERANCE_CHANGE or abs(new_loss - loss) < self.TOLERANCE_CHANGE
            loss, gradient = new_loss, new_gradient
            it += 1
            history.advance_to(it)
            if converged:
                break
        guard.finish(len(history.rows), lr)
        return history.close()

    @staticmethod
    def _direction(gradient: torch.Tensor, memory: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   scale: float | torch.Tensor) -> torch.Tensor:
        """-H gradient by the two-loop recursion over the memory (no value leaves the device)."""
        q = gradient.neg()
        alphas = []
        for s, y, rho in reversed(memory):
            alpha = s.dot(q).double() * rho
            q.addcmul_(y, alpha.to(q.dtype), value=-1)  # in place: no image-sized temporary per memory pair
            alphas.append(alpha)
        r = q.mul_(scale)
        for (s, y, rho), alpha in zip(memory, reversed(alphas), strict=True):
            r.addcmul_(s, (alpha - y.dot(r).double() * rho).to(r.dtype))
        return r


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
        self.recoveries: list[dict] = []

    def run(self, params: list[torch.Tensor], render: Render, objective: Refreshable, iters: int, desc: str = "",
            progress: bool = True) -> list[dict]:
        for p in params:
            p.requires_grad_(True)
        peak = self.lr
        opt = torch.optim.Adam(params, lr=peak)
        history, guard = _History(iters, desc, progress), _Guard(params, desc, diverge=True)
        self.recoveries = guard.recoveries
        for step in range(iters):
            if step % self.refresh_every == 0:
                objective.refresh()
                guard.refreshed()
            for group in opt.param_groups:
                group["lr"] = ramped_lr(peak, step / iters, self.rampup, self.rampdown)
            opt.zero_grad()
            try:
                history.evaluate(render, objective, guard)
                opt.step()
            except _Fault as fault:
                peak = guard.step_back(fault, peak, len(history.rows))
                opt = torch.optim.Adam(params, lr=peak)  # its moments hold the faulty steps
            history.advance_to(step + 1)
        guard.finish(len(history.rows), peak)
        return history.close()


def make_solver(cfg) -> Solver:
    """The solver an ``EditConfig`` selects."""
    if cfg.optimizer == "lbfgs":
        return LBFGS(cfg.refresh_every, cfg.lbfgs_history, cfg.lr)
    if cfg.optimizer == "adam":
        return Adam(cfg.lr, cfg.refresh_every, cfg.lr_rampup, cfg.lr_rampdown)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
