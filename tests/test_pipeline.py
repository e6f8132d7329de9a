"""The pipeline's parts on constructed inputs: objective, solvers, parameterization, composite, config validation;
and the swap baselines (paste, global) end to end at a tiny size."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from torch import nn

from optimswap.config import EditConfig
from optimswap.edits.makeup import MakeupConfig
from optimswap.edits.swap import METHOD_DEFAULTS, SWAP, SwapConfig, pasted_targets, swap
from optimswap.errors import OptimizationError, OptionError
from optimswap.face import warp_from_frame, warp_to_frame
from optimswap.io import to_numpy, to_tensor
from optimswap.objective import Objective, Term
from optimswap.optim import LBFGS, Adam, ramped_lr, resize_to
from optimswap.pipeline import Frame, Level, MaskedPixels, Plan, composite, editable_mask, optimize_frame
from optimswap.runs import run_to_files

# ---------------------------------------------------------------------------------------------------- Objective


class RecordingEncoder(nn.Module):
    """Features with known values: layer L of image x is SCALES[L] * x; records the layer lists it was asked for."""

    SCALES = {"relu1_1": 2.0, "relu2_1": -3.0, "relu3_1": 0.5, "relu4_1": 7.0}

    def __init__(self):
        super().__init__()
        self.calls: list[list[str]] = []

    def forward(self, image, layers):
        self.calls.append(list(layers))
        return {name: self.SCALES[name] * image for name in layers}


class Probe(nn.Module):
    """loss(x) = sum(coef * x^2); remembers its inputs."""

    def __init__(self, coef: float):
        super().__init__()
        self.coef, self.seen = coef, []

    def forward(self, x):
        self.seen.append(x)
        return self.coef * (x**2).sum()


class RefreshingProbe(Probe):
    def __init__(self, coef: float):
        super().__init__(coef)
        self.refreshed = []

    def refresh(self, x):
        assert not torch.is_grad_enabled()
        self.refreshed.append(x)


class Exploding(nn.Module):
    def forward(self, x):
        raise AssertionError("a zero-weight term was evaluated")

    def refresh(self, x):
        raise AssertionError("a zero-weight term was refreshed")


def test_objective_total_inputs_and_skipped_terms():
    """Total = sum weight * loss(input); the image for layer None, that layer's features otherwise; zero-weight
    terms neither evaluated nor refreshed, and their layers never asked of the encoder."""
    encoder = RecordingEncoder()
    pixel, early, late, plain = RefreshingProbe(1.5), RefreshingProbe(0.25), Probe(2.0), Probe(-1.0)
    objective = Objective(encoder, [
        Term("pixel", 0.5, pixel, None), Term("late", 3.0, late, "relu3_1"), Term("off", 0.0, Exploding(), "relu4_1"),
        Term("early", 2.0, early, "relu1_1"), Term("also_early", 4.0, plain, "relu1_1")])
    image = torch.rand(1, 3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    total, parts = objective(image)
    assert encoder.calls == [["relu1_1", "relu3_1"]]  # one pass, each layer once, not relu4_1
    assert pixel.seen[0] is image
    assert torch.equal(early.seen[0], 2.0 * image) and torch.equal(plain.seen[0], 2.0 * image)
    assert torch.equal(late.seen[0], 0.5 * image)
    sq = (image**2).sum()
    by_hand = {"pixel": 0.5 * 1.5 * sq, "late": 3.0 * 2.0 * 0.25 * sq, "early": 2.0 * 0.25 * 4 * sq,
               "also_early": 4.0 * -1.0 * 4 * sq}
    assert set(parts) == set(by_hand)
    for name, value in by_hand.items():
        assert float(parts[name]) == pytest.approx(float(value), rel=1e-12), name
        assert not parts[name].requires_grad
    assert float(total) == pytest.approx(float(sum(by_hand.values())), rel=1e-12)


def test_objective_refreshes_on_the_features_of_the_next_evaluation_only():
    """The first evaluation, and the first after each ``refresh()``, refreshes the refreshable terms on its own
    encoder pass (no extra one), before their losses."""
    encoder = RecordingEncoder()
    early, plain = RefreshingProbe(1.0), Probe(1.0)
    objective = Objective(encoder, [Term("early", 1.0, early, "relu1_1"), Term("plain", 1.0, plain, "relu2_1")])
    images = [torch.full((1, 3, 2, 2), float(i)) for i in range(4)]
    objective(images[0])
    objective(images[1])
    objective.refresh()
    objective(images[2])
    objective(images[3])
    assert len(encoder.calls) == 4
    assert [float(x[0, 0, 0, 0]) for x in early.refreshed] == [0.0, 4.0]  # relu1_1 = 2 x the image
    assert early.refreshed[1] is early.seen[2]


def test_objective_without_encoder_layers_never_calls_the_encoder():
    encoder = RecordingEncoder()
    objective = Objective(encoder, [Term("pixel", 1.0, Probe(1.0), None), Term("off", 0, Exploding(), "relu2_1")])
    image = torch.ones(1, 3, 4, 4, requires_grad=True)
    objective.refresh()
    total, _ = objective(image)
    total.backward()
    assert encoder.calls == []
    assert torch.allclose(image.grad, 2 * torch.ones_like(image))


# ------------------------------------------------------------------------------------------------------ Solvers


class Counting:
    """A fake objective's bookkeeping: evaluations so far, and their count at each refresh."""

    def __init__(self):
        self.evaluations = 0
        self.refresh_at: list[int] = []

    def refresh(self):
        self.refresh_at.append(self.evaluations)


class Quadratic(Counting):
    """0.5 (p - c)' A (p - c) split in two named parts; counts refreshes and the evaluations before each."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.a, self.c = a, c

    def __call__(self, p):
        self.evaluations += 1
        d = p - self.c
        diagonal = 0.5 * (torch.diagonal(self.a) * d**2).sum()
        rest = 0.5 * d @ self.a @ d - diagonal
        return diagonal + rest, {"diagonal": diagonal.detach(), "rest": rest.detach()}

    def value(self, p) -> float:
        d = p.detach() - self.c
        return float(0.5 * d @ self.a @ d)


def spd(n: int, condition: float, seed: int) -> torch.Tensor:
    """A random symmetric positive definite matrix with eigenvalues log-spaced over ``condition``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.logspace(0, math.log10(condition), n, dtype=torch.float64)) @ q.T


def test_ramped_lr_schedule():
    """Linear warm-up over the first 10 %, flat, cosine down over the last 20 %."""
    assert ramped_lr(0.5, 0.0, 0.1, 0.2) == 0.0
    assert ramped_lr(0.5, 0.05, 0.1, 0.2) == pytest.approx(0.25)  # half-way up
    assert ramped_lr(0.5, 0.1, 0.1, 0.2) == pytest.approx(0.5)  # warm-up done
    assert ramped_lr(0.5, 0.5, 0.1, 0.2) == pytest.approx(0.5)  # plateau
    assert ramped_lr(0.5, 0.8, 0.1, 0.2) == pytest.approx(0.5)  # ramp-down starts
    assert ramped_lr(0.5, 0.9, 0.1, 0.2) == pytest.approx(0.25)  # cosine half-way: 0.5 - 0.5 cos(pi / 2)
    assert ramped_lr(0.5, 0.85, 0.1, 0.2) == pytest.approx(0.5 * (0.5 - 0.5 * math.cos(0.75 * math.pi)))
    assert ramped_lr(0.5, 1.0, 0.1, 0.2) == pytest.approx(0.0, abs=1e-15)  # ramp-down end
    assert ramped_lr(0.5, 0.0, 0.0, 0.0) == 0.5 and ramped_lr(0.5, 1.0, 0.0, 0.0) == 0.5  # no ramps: constant


@pytest.mark.parametrize("solver, iters", [(LBFGS(refresh_every=5), 40), (Adam(lr=0.1, refresh_every=5), 500)])
def test_solvers_minimise_a_convex_quadratic(solver, iters, device):
    a, c = spd(4, 10.0, seed=1).to(device), torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64, device=device)
    p = torch.zeros(4, dtype=torch.float64, device=device)
    objective = Quadratic(a, c)
    start = objective.value(p)
    history = solver.run([p], lambda: p, objective, iters, progress=False)
    assert objective.value(p) < 1e-6 * start
    assert torch.allclose(p.detach(), c, atol=1e-3)
    assert history[0]["total"] == pytest.approx(start)


def test_solvers_refresh_every_n_iterations_and_report_the_same_history():
    """23 iterations, refresh every 5: refreshes before iterations 0, 5, 10, 15, 20 for both solvers (Adam evaluates
    once per iteration, so they fall on those evaluations); one history row per evaluation with the same keys."""
    a, c = spd(40, 1e6, seed=2), torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rows = {}
    for name, solver in (("lbfgs", LBFGS(refresh_every=5)), ("adam", Adam(lr=0.01, refresh_every=5))):
        p = torch.zeros(40, dtype=torch.float64)
        objective = Quadratic(a, c)  # ill-conditioned: L-BFGS does not converge (and stop early) in 23 iterations
        rows[name] = solver.run([p], lambda p=p: p, objective, 23, progress=False)
        assert len(objective.refresh_at) == 5, name
        assert len(rows[name]) == objective.evaluations
        assert [r["eval"] for r in rows[name]] == list(range(len(rows[name])))
        for r in rows[name]:
            assert r["total"] == pytest.approx(r["diagonal"] + r["rest"])
        if name == "adam":
            assert objective.refresh_at == [0, 5, 10, 15, 20] and len(rows[name]) == 23
    keys = {"eval", "total", "diagonal", "rest", "seconds"}
    assert all(set(r) == keys for r in rows["lbfgs"] + rows["adam"])


def test_adam_refreshes_before_the_right_evaluations_and_warms_up():
    a, c = spd(3, 5.0, seed=4), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    p = torch.zeros(3, dtype=torch.float64)
    objective = Quadratic(a, c)
    history = Adam(lr=0.1, refresh_every=4, rampup=0.1, rampdown=0.2).run([p], lambda: p, objective, 20,
                                                                           progress=False)
    assert objective.refresh_at == [0, 4, 8, 12, 16]
    assert history[1]["total"] == history[0]["total"]  # learning rate 0 at t = 0: the first step does not move
    assert history[2]["total"] < history[1]["total"]


class Rosenbrock(Counting):
    """(1 - x)^2 + 100 (y - x^2)^2: L-BFGS's line searches often need several evaluations here."""

    def __call__(self, p):
        self.evaluations += 1
        value = (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
        return value, {"rosenbrock": value.detach()}


def test_lbfgs_refreshes_every_n_iterations_even_with_long_line_searches():
    """20 iterations, refresh every 5: 4 refreshes, however many evaluations the line searches take."""
    p = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    objective = Rosenbrock()
    LBFGS(refresh_every=5).run([p], lambda: p, objective, 20, progress=False)
    assert objective.evaluations > 25  # the line searches did take extra evaluations
    assert len(objective.refresh_at) == 4


class Recording(Quadratic):
    """The quadratic, keeping the point of every evaluation."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor):
        super().__init__(a, c)
        self.points: list[torch.Tensor] = []

    def __call__(self, p):
        self.points.append(p.detach().clone())
        return super().__call__(p)


def test_lbfgs_refreshes_cost_no_evaluation_of_their_own():
    """A refresh takes effect at the next line search's first trial point: the point last evaluated is never
    evaluated again (torch.optim.LBFGS re-evaluates it at every refresh, one evaluation in ``refresh_every``)."""
    a, c = spd(40, 1e6, seed=2), torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    objective = Recording(a, c)
    p = torch.zeros(40, dtype=torch.float64)
    LBFGS(refresh_every=5).run([p], lambda: p, objective, 23, progress=False)
    assert len(objective.refresh_at) == 5
    for at in objective.refresh_at[1:]:
        assert not torch.equal(objective.points[at], objective.points[at - 1])


def test_lbfgs_stops_when_converged():
    """At the minimum L-BFGS makes no step: one refresh, one evaluation, not the whole budget."""
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    objective = Quadratic(torch.eye(2, dtype=torch.float64), c)
    p = c.clone()
    history = LBFGS(refresh_every=5).run([p], lambda: p, objective, 50, progress=False)
    assert len(history) == 1 and objective.refresh_at == [0]


class Separable(Counting):
    """0.5 sum h (p - c)^2 over an image-sized parameter, curvatures h in [0.2, 1]: the gradient is spread thin over
    many coordinates, as an image objective's is."""

    def __init__(self, shape: tuple[int, ...], scale: float):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.h = 0.2 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)
        self.c = torch.randn(shape, generator=g, dtype=torch.float64)
        self.c *= scale / float((self.h * self.c).norm())  # |gradient| at 0 is scale

    def __call__(self, p):
        self.evaluations += 1
        value = 0.5 * (self.h * (p - self.c) ** 2).sum()
        return value, {"separable": value.detach()}


def test_lbfgs_first_step_needs_no_stretching_on_an_image_sized_problem():
    """With no memory the first trial step has unit length (as in L-BFGS-B), and is taken: one evaluation for the
    first iteration. torch.optim.LBFGS's 1/|g|_1 is ~1/sqrt(n) of that here and its line search stretched it over
    two or more further evaluations."""
    objective = Separable((3, 64, 64), scale=2.0)
    p = torch.zeros(3, 64, 64, dtype=torch.float64)
    history = LBFGS(refresh_every=5).run([p], lambda: p, objective, 1, progress=False)
    assert objective.evaluations == 2  # the start and the first trial point
    assert history[1]["total"] < history[0]["total"]
    assert float(p.detach().norm()) == pytest.approx(1.0)


class Faulty(Quadratic):
    """The quadratic, with a planted fault at the given evaluations (1-based; all when None): a NaN or infinite
    loss, a NaN gradient under a finite loss, or a finite loss 1000 times too large."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor, kind: str, at: set[int] | None):
        super().__init__(a, c)
        self.kind, self.at = kind, at

    def __call__(self, p):
        total, parts = super().__call__(p)
        if self.at is None or self.evaluations in self.at:
            if self.kind == "nan_gradient":  # sqrt at 0: value 0, gradient 0 * inf = nan
                total = total + torch.sqrt(((p - p.detach()) ** 2).sum())
            else:
                total = total * {"nan": math.nan, "inf": math.inf, "spike": 1000.0}[self.kind]
        return total, parts


SOLVERS = {"lbfgs": (lambda: LBFGS(refresh_every=5), 40), "adam": (lambda: Adam(lr=0.1, refresh_every=5), 300)}


@pytest.mark.parametrize("kind", ["nan", "inf", "nan_gradient"])
@pytest.mark.parametrize("name", SOLVERS)
def test_solvers_recover_from_a_fault_and_go_on_with_a_smaller_step(name, kind):
    """A NaN/inf loss or a NaN gradient at evaluations 4 and 5: the solver steps back to the last good values,
    halves its step, and still ends far below the start; the history has only finite rows."""
    make, iters = SOLVERS[name]
    a, c = spd(4, 10.0, seed=1), torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    p = torch.zeros(4, dtype=torch.float64)
    objective, solver = Faulty(a, c, kind, at={4, 5}), make()
    start = objective.value(p)
    history = solver.run([p], lambda: p, objective, iters, progress=False)
    assert objective.evaluations >= 5  # the faults did happen
    assert 1 <= len(solver.recoveries) <= 2
    first = solver.recoveries[0]
    assert first["eval"] == 3 and first["lr"] == solver.lr / 2 and ("not finite" if kind == "nan_gradient"
                                                                     else kind) in first["reason"]
    assert torch.isfinite(p).all() and objective.value(p) < 1e-3 * start
    assert all(math.isfinite(r["total"]) for r in history) and len(history) == objective.evaluations - 2


def test_adam_recovers_from_an_exploding_loss():
    a, c = spd(4, 10.0, seed=1), torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    p = torch.zeros(4, dtype=torch.float64)
    objective, solver = Faulty(a, c, "spike", at={30}), Adam(lr=0.1, refresh_every=5)
    start = objective.value(p)
    solver.run([p], lambda: p, objective, 300, progress=False)
    assert [r["eval"] for r in solver.recoveries] == [29] and "exploded" in solver.recoveries[0]["reason"]
    assert objective.value(p) < 1e-3 * start


@pytest.mark.parametrize("kind", ["nan", "nan_gradient"])
@pytest.mark.parametrize("name", SOLVERS)
def test_solvers_give_up_with_a_clear_error_when_every_evaluation_fails(name, kind):
    """After 5 restarts, or when the iterations run out before that without one good evaluation."""
    make, iters = SOLVERS[name]
    p = torch.zeros(2, dtype=torch.float64)
    start, solver = p.clone(), make()
    reason = "the gradient is not finite" if kind == "nan_gradient" else "the loss is nan"
    objective = Faulty(torch.eye(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), kind, at=None)
    with pytest.raises(OptimizationError, match=f"{reason} at evaluation 0, still after 5 restarts from the last good "
                                                "values with the step halved each time"):
        solver.run([p], lambda: p, objective, iters, progress=False)
    assert len(solver.recoveries) == 5 and solver.recoveries[-1]["lr"] == solver.lr / 32
    assert torch.equal(p, start)  # left at the last good (here: the starting) values
    with pytest.raises(OptimizationError, match=f"{reason} at every evaluation, still after 3 restarts"):
        solver.run([p], lambda: p, objective, 3, progress=False)


class FailingAt(Counting):
    """Another objective whose loss is NaN at the given evaluations (1-based; all when None)."""

    def __init__(self, objective, at: set[int] | None):
        super().__init__()
        self.objective, self.at = objective, at

    def __call__(self, image):
        self.evaluations += 1
        total, parts = self.objective(image)
        return (total * math.nan if self.at is None or self.evaluations in self.at else total), parts


def test_optimize_frame_names_the_level_that_diverged_and_lists_the_recoveries():
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(18))
    frame = Frame(np.eye(2, 3), image, np.zeros((68, 2)), half_mask(32, torch.float32))
    cfg = EditConfig(size=32, levels=2, iters=8)

    def plan(fail_at):
        """Level 0 is clean; the objective of level 1 fails at the evaluations ``fail_at`` (all when None)."""
        def objective(level):
            goal = Objective(None, [Term("goal", 1.0, PixelGoal(torch.full_like(level.image, 0.5)), None)])
            return goal if level.size == 16 else FailingAt(goal, fail_at)
        return Plan(objective)

    _, history, _, recoveries = optimize_frame(frame, frame.image, cfg, plan({2}), LBFGS(refresh_every=4),
                                               progress=False)
    assert [(r["level"], r["eval"]) for r in recoveries] == [(1, 1)] and "the loss is nan" in recoveries[0]["reason"]
    assert all(math.isfinite(h["total"]) for h in history)
    with pytest.raises(OptimizationError, match=r"optimization diverged at level 2 of 2 \(32 px\): the loss is nan"):
        optimize_frame(frame, frame.image, cfg, plan(None), LBFGS(refresh_every=4), progress=False)


# ------------------------------------------------------------------------------------------- MaskedPixels, levels


def half_mask(size: int, dtype=torch.float64) -> torch.Tensor:
    """0 on the left half, a ramp, 1 on the right: hard zeros and soft values both occur."""
    ramp = ((torch.arange(size, dtype=dtype) - size / 2 + 2) / 4).clamp(0, 1)
    return ramp.expand(size, size)[None, None].clone()


def test_masked_pixels_move_only_inside_the_mask():
    g = torch.Generator().manual_seed(11)
    image = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    mask = half_mask(16)
    pixels = MaskedPixels()
    (param,) = pixels.start(Level(16, image, mask, image))
    assert torch.equal(param, image)  # first level: starts from its start image (here the source)
    outside, inside = (mask == 0).expand_as(image), (mask == 1).expand_as(image)
    for _ in range(3):
        with torch.no_grad():
            param.copy_(10 * torch.randn(param.shape, generator=g, dtype=torch.float64))
        rendered = pixels.render()
        assert torch.equal(rendered[outside], image[outside])
        assert torch.allclose(rendered[inside], param[inside], atol=1e-12)
    param.requires_grad_(True)
    (grad,) = torch.autograd.grad(pixels.render().sum(), param)
    assert torch.equal(grad, mask.expand_as(image))  # d render / d param = mask
    result = pixels.finish()
    assert result.min() >= 0 and result.max() <= 1 and torch.equal(result[outside], image[outside])


def test_finer_level_starts_from_its_source_plus_the_upsampled_coarse_change():
    """The coarse level adds +0.1 red inside its mask; the fine level starts from the fine source (its own detail,
    not the blurred coarse image) plus that change, upsampled."""
    g = torch.Generator().manual_seed(12)
    fine = 0.2 + 0.6 * torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    coarse = resize_to(fine, 8)
    pixels = MaskedPixels()
    (param,) = pixels.start(Level(8, coarse, torch.ones(1, 1, 8, 8, dtype=torch.float64), coarse))
    change = torch.zeros_like(coarse)
    change[:, 0] = 0.1
    with torch.no_grad():
        param += change
    pixels.finish()
    (fine_param,) = pixels.start(Level(16, fine, half_mask(16), fine))
    expected = fine.clone()
    expected[:, 0] += 0.1
    assert torch.allclose(fine_param, expected, atol=1e-12)


def test_a_start_image_other_than_the_source_carries_its_own_detail_to_each_level():
    """With a start image (e.g. the classic swap), a level starts from it, and a finer level from its own start
    image plus the coarser level's change to the coarser start image."""
    g = torch.Generator().manual_seed(13)
    start = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    coarse, fine = (torch.rand(1, 3, s, s, generator=g, dtype=torch.float64) for s in (8, 16))
    pixels = MaskedPixels()
    coarse_start = resize_to(start, 8)
    (param,) = pixels.start(Level(8, coarse, torch.ones(1, 1, 8, 8, dtype=torch.float64), coarse_start))
    assert torch.equal(param, coarse_start)
    with torch.no_grad():
        param += 0.05
    result = pixels.finish()
    (fine_param,) = pixels.start(Level(16, fine, torch.ones(1, 1, 16, 16, dtype=torch.float64), start))
    assert torch.allclose(fine_param, start + resize_to(result - coarse_start, 16), atol=1e-12)


class PixelGoal(nn.Module):
    def __init__(self, goal):
        super().__init__()
        self.goal = goal

    def forward(self, x):
        return ((x - self.goal) ** 2).mean()


def test_optimize_frame_runs_each_level_and_leaves_unmasked_pixels():
    """Two levels (16, 32 px) towards a grey goal: every level's result is the source where its mask is 0, moves
    to the goal where it is 1, and the history is tagged with its level."""
    g = torch.Generator().manual_seed(14)
    image = torch.rand(1, 3, 32, 32, generator=g)
    frame = Frame(np.eye(2, 3), image, np.zeros((68, 2)), half_mask(32, torch.float32))
    plan = Plan(lambda level: Objective(None, [Term("goal", 1.0, PixelGoal(torch.full_like(level.image, 0.5)),
                                                    None)]))
    cfg = EditConfig(size=32, levels=2, iters=8)
    results, history, timings, recoveries = optimize_frame(frame, frame.image, cfg, plan, LBFGS(refresh_every=4),
                                                           progress=False)
    assert [r.shape[-1] for r in results] == [16, 32]
    for size, result in zip((16, 32), results, strict=True):
        mask = resize_to(frame.mask, size).clamp(0, 1).expand_as(result)
        source = resize_to(image, size)
        assert (mask == 0).sum() > 100 and (mask > 0.999).sum() > 100
        assert torch.equal(result[mask == 0], source[mask == 0])
        assert (result[mask > 0.999] - 0.5).abs().max() < 0.02
        assert (source[mask > 0.999] - 0.5).abs().mean() > 0.05
    assert {h["level"] for h in history} == {0, 1}
    assert timings["level0_evaluations"] + timings["level1_evaluations"] == len(history)
    assert recoveries == []  # a clean run restarts nothing


# ---------------------------------------------------------------------------------------------------- composite


@pytest.fixture(scope="module")
def scene():
    """A smooth 90 x 110 photo on the uint8 grid, a rotated and scaled 64-px frame of it and a soft disc mask."""
    g = torch.Generator().manual_seed(15)
    h, w, size = 90, 110, 64
    base = F.interpolate(torch.rand(1, 3, 9, 11, generator=g), size=(h, w), mode="bilinear", align_corners=False)
    photo_u8 = to_numpy((0.25 + 0.5 * base + 0.05 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1))
    photo = to_tensor(photo_u8)
    angle, scale = math.radians(12), 0.8
    rot = scale * np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    matrix = np.concatenate([rot, (np.array([size / 2, size / 2]) - rot @ np.array([58.0, 44.0]))[:, None]], 1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((22 - ((yy - 32.0) ** 2 + (xx - 30.0) ** 2).sqrt()) / 4).clamp(0, 1)[None, None]
    frame = Frame(matrix, warp_to_frame(photo, matrix, size), np.zeros((68, 2)), mask)
    photo_mask = warp_from_frame(mask, matrix, h, w).clamp(0, 1)
    return photo_u8, photo, frame, photo_mask


def edit_config(color_match: bool) -> EditConfig:
    return EditConfig(size=64, levels=1, color_match_result=color_match)


@pytest.mark.parametrize("color_match", [False, True])
def test_composite_is_the_photo_outside_the_mask_and_for_an_unchanged_frame(scene, color_match, device):
    photo_u8, photo, frame, photo_mask = scene
    photo, photo_mask = photo.to(device), photo_mask.to(device)
    frame = dataclasses.replace(frame, image=frame.image.to(device), mask=frame.mask.to(device))
    outside = (photo_mask == 0).expand_as(photo)
    assert 0.1 < outside.float().mean() < 0.9
    noise = torch.rand(frame.image.shape, generator=torch.Generator().manual_seed(16)).to(device)
    changed = composite(photo, frame, noise, edit_config(color_match))
    assert torch.equal(changed[outside], photo[outside])  # bit for bit where the warped mask is 0
    assert (changed - photo).abs()[~outside].mean() > 0.05  # and the noise did arrive inside
    same = composite(photo, frame, frame.image, edit_config(color_match))
    assert torch.equal(same[outside], photo[outside])
    assert np.abs(to_numpy(same).astype(int) - photo_u8).max() <= 1


def test_composite_carries_a_colour_change_into_the_photo(scene):
    """+0.1 red, -0.05 green in the frame: the same change in the photo where the mask is fully 1."""
    _, photo, frame, photo_mask = scene
    change = torch.tensor([0.1, -0.05, 0.0]).view(1, 3, 1, 1)
    out = composite(photo, frame, frame.image + change, edit_config(False))
    core = F.avg_pool2d((photo_mask > 0.999).float(), 9, stride=1, padding=4)[0, 0] == 1  # away from the edge
    assert core.sum() > 300
    moved = (out - photo)[0][:, core]
    assert torch.allclose(moved.mean(1), change.flatten(), atol=0.01)
    assert moved[0].min() > 0.07 and moved[1].max() < -0.035 and moved[2].abs().max() < 1e-3


def test_composite_colour_match_keeps_the_masked_lab_mean(scene):
    """A colour cast in the result is undone by color_match_result: the mask-weighted Lab mean in the photo stays."""
    _, photo, frame, photo_mask = scene
    cast = (0.7 * frame.image + torch.tensor([0.2, 0.0, -0.1]).view(1, 3, 1, 1)).clamp(0, 1)

    def lab_mean(image):
        return (rgb_to_lab(image) * photo_mask).sum((2, 3))[0] / photo_mask.sum()

    kept = lab_mean(composite(photo, frame, cast, edit_config(True))) - lab_mean(photo)
    shifted = lab_mean(composite(photo, frame, cast, edit_config(False))) - lab_mean(photo)
    assert kept.abs().max() < 0.5  # Lab units
    assert shifted.abs().max() > 5


# ----------------------------------------------------------------------------------------------- config options


def numeric_fields(cls) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    return [f for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]


CONFIGS = [SwapConfig, MakeupConfig]


@pytest.mark.parametrize("cls", CONFIGS)
def test_numeric_options_reject_nan_and_inf(cls):
    fields = numeric_fields(cls)
    assert len(fields) >= 15
    for f in fields:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(OptionError) as err:
                cls().replace(**{f.name: bad})
            assert err.value.option == f.name, (f.name, bad)
    with pytest.raises(OptionError) as err:  # items of a tuple of numbers too
        SwapConfig(style_layer_weights=(1.0, math.nan, 1.0, 1.0))
    assert err.value.option == "style_layer_weights"


# Options whose edge of the range needs another option changed to be consistent.
COMPANIONS = {"levels": {"size": 2048}, "spatial_weight": {"histogram_weight": 1.0}}


@pytest.mark.parametrize("cls", CONFIGS)
def test_numeric_options_enforce_their_range(cls):
    hints = typing.get_type_hints(cls)
    checked = 0
    for f in numeric_fields(cls):
        low, high, above = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("above")
        step = 1 if hints[f.name] is int else 1e-3
        bad, good = [], []
        if low is not None:
            bad.append(low if above else low - step)
            good.append(low + step if above else hints[f.name](low))
        if high is not None:
            bad.append(high + step)
            good.append(hints[f.name](high))
        for value in bad:
            with pytest.raises(OptionError) as err:
                cls().replace(**{f.name: value})
            assert err.value.option == f.name, (f.name, value)
            checked += 1
        for value in good:
            assert getattr(cls().replace(**COMPANIONS.get(f.name, {}), **{f.name: value}), f.name) == value
    assert checked >= 15
    with pytest.raises(OptionError) as err:
        SwapConfig(style_layer_weights=(1.0, -0.5, 1.0, 1.0))
    assert err.value.option == "style_layer_weights"


def test_parse_value():
    assert SwapConfig.parse_value("style_layers", "relu1_1+relu3_1") == ("relu1_1", "relu3_1")
    assert SwapConfig.parse_value("style_layer_weights", " 1 + 0.5 ") == (1.0, 0.5)
    assert SwapConfig.parse_value("style_layer_weights", "") == ()
    assert SwapConfig.parse_value("iters", " 12 ") == 12 and isinstance(SwapConfig.parse_value("iters", "12"), int)
    assert SwapConfig.parse_value("tv_weight", "2.5") == 2.5
    for text, value in (("true", True), ("False", False), ("1", True), ("0", False), ("YES", True), ("no", False)):
        assert SwapConfig.parse_value("relight_targets", text) is value, text
    for name, text in (("iters", "ten"), ("iters", "1.5"), ("tv_weight", "heavy"), ("relight_targets", "maybe"),
                       ("style_layer_weights", "1+x"), ("relight_targets", "")):
        with pytest.raises(OptionError) as err:
            SwapConfig.parse_value(name, text)
        assert err.value.option == name, (name, text)


# ------------------------------------------------------------------------------------------- swap baselines


def test_pasted_targets_is_the_valid_weighted_mean_or_the_source():
    g = torch.Generator().manual_seed(17)
    images = torch.rand(3, 3, 4, 5, generator=g, dtype=torch.float64)
    source = torch.rand(1, 3, 4, 5, generator=g, dtype=torch.float64)
    valid = torch.tensor([1.0, 0.25, 0.0], dtype=torch.float64)[torch.randint(0, 3, (3, 1, 4, 5), generator=g)]
    valid[:, :, 0, 0] = 0  # no target here
    valid[:, :, 0, 1] = torch.tensor([1.0, 0.25, 0.0], dtype=torch.float64).view(3, 1)
    pasted = pasted_targets(images, valid, source)
    for y in range(4):
        for x in range(5):
            v = valid[:, 0, y, x]
            expected = source[0, :, y, x] if v.sum() == 0 else (v[:, None] * images[:, :, y, x]).sum(0) / v.sum()
            assert torch.allclose(pasted[0, :, y, x], expected, atol=1e-12), (y, x)
    assert torch.allclose(pasted[0, :, 0, 1], (images[0, :, 0, 1] + 0.25 * images[1, :, 0, 1]) / 1.25)


def test_method_defaults_of_the_baselines():
    assert METHOD_DEFAULTS["global"]["n_targets"] == 1
    assert METHOD_DEFAULTS["global"]["style_layers"] == ("relu3_1", "relu4_1")
    cfg = SWAP.preset("fast", method="global")
    assert cfg.n_targets == 1 and cfg.style_layers == ("relu3_1", "relu4_1")
    assert SWAP.preset("fast", method="global", n_targets=3).n_targets == 3  # an explicit option still wins
    assert SWAP.preset("fast", method="paste").levels == 1


def test_paste_baseline_moves_the_face_to_the_pasted_mean(faces):
    folder = faces / "identities"
    cfg = SWAP.preset("fast", method="paste", size=64, iters=10, n_targets=2)
    result = swap(folder / "jennifer" / "01.jpg", [folder / "angelina" / f"0{i}.jpg" for i in (2, 5, 7)], cfg,
                  progress=False)
    assert len(result.targets.used) == 2
    assert all(set(h) == {"level", "eval", "total", "paste", "seconds"} for h in result.history)
    assert result.history[-1]["paste"] < 0.35 * result.history[0]["paste"]
    goal = pasted_targets(result.targets.images, result.targets.valid, result.frame.image)
    inside = (result.frame.mask > 0.5).expand_as(goal)
    before = (result.frame.image - goal).abs()[inside].mean()
    after = (result.frame_result - goal).abs()[inside].mean()
    assert after < 0.1 * before


def test_global_baseline_uses_one_target_and_lowers_its_patch_terms(faces, tmp_path):
    folder = faces / "identities"
    # 128 px: at 64 px relu4_1 is 8 x 8 cells and no 3x3 target patch lies wholly inside the valid face region.
    # search_energy 1 (exact search) skips the eigendecomposition, which is slow on a loaded 2-core machine.
    cfg = SWAP.preset("fast", method="global", size=128, levels=1, iters=4, search_energy=1.0)
    record = run_to_files("swap", folder / "jennifer" / "01.jpg", {"target": [folder / "angelina" / "07.jpg",
                                                                              folder / "angelina" / "02.jpg"]},
                          tmp_path / "global.png", cfg, progress=False)
    assert record["options"]["n_targets"] == 1 and len(record["targets_used"]) == 1
    history = record["loss_history"]
    assert {k for k in history[0] if k.startswith("style_")} == {"style_relu3_1", "style_relu4_1"}
    for term in ("style_relu3_1", "style_relu4_1"):
        assert 0 < history[-1][term] < 0.9 * history[0][term], term


def test_composite_puts_back_only_the_coarse_change_onto_a_start_image(scene):
    """With a start image and change_sigma, a constant change arrives in full while a checkerboard (the finest band,
    e.g. the solver's smoothing of the start's detail) is filtered out: the start's own detail is kept."""
    _, photo, frame, photo_mask = scene
    start = (photo + 0.05).clamp(0, 1)
    start_frame = warp_to_frame(start, frame.matrix, frame.size)
    cfg = edit_config(False).replace(change_sigma=1.5)
    core = photo_mask[0, 0] > 0.999
    checker = 0.1 * (torch.arange(frame.size)[:, None] + torch.arange(frame.size)[None]).remainder(2) - 0.05
    unchanged = composite(photo, frame, start_frame, cfg, start=start)
    out = composite(photo, frame, start_frame + checker, cfg, start=start)
    assert (out - unchanged)[0, :, core].abs().max() < 0.01  # the checkerboard change is gone
    out = composite(photo, frame, start_frame + 0.04, cfg, start=start)
    assert (out - unchanged)[0, :, core].min() > 0.02  # a smooth change arrives (the small disc's blend damps it)
    without_blur = composite(photo, frame, start_frame + checker, edit_config(False), start=start)
    assert (without_blur - unchanged)[0, :, core].abs().max() > 0.03  # (the checkerboard does arrive unfiltered)


def test_a_swap_recovers_from_one_nan_and_a_hopeless_one_writes_nothing(faces, tmp_path, cli, monkeypatch):
    """Through the command line: one NaN evaluation is recovered from (exit 0, the restart in the record); an
    objective that is always NaN ends in one error line and exit 2, and no picture or record is written."""
    evaluate, calls, fail_all = Objective.__call__, [], []

    def flaky(self, image):
        calls.append(1)
        total, parts = evaluate(self, image)
        return (total * math.nan if fail_all or len(calls) == 2 else total), parts

    monkeypatch.setattr(Objective, "__call__", flaky)
    args = ["swap", faces / "identities" / "mark" / "01.jpg", faces / "identities" / "tony_blair", "--preset", "fast",
            "--size", "64", "--levels", "1", "--iters", "3", "--n-targets", "1", "-q"]
    code, _, err = cli(*args, "-o", tmp_path / "once.png")
    assert code == 0, err
    record = json.loads((tmp_path / "once.json").read_text())
    assert [(r["level"], r["eval"]) for r in record["recoveries"]] == [(0, 1)]
    assert all(math.isfinite(h["total"]) for h in record["loss_history"])
    fail_all.append(True)
    code, _, err = cli(*args, "-o", tmp_path / "never.png")
    assert code == 2 and err.startswith("error: optimization diverged at level 1 of 1 (64 px): the loss is nan")
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.glob("never*"))


def test_the_editable_mask_leaves_out_the_kept_share_and_the_frame_beyond_the_photo():
    """A frame that reaches past a 40 x 40 photo: with a keep mask, what the edit may change is the frame's mask
    less the kept share inside the photo and nothing beyond it (a loss over the region must not count pixels that
    no output shows)."""
    size = 64
    matrix = np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 30.0]])  # photo pixel (0, 0) at frame (30, 30)
    mask = torch.ones(1, 1, size, size)
    frame = Frame(matrix, torch.zeros(1, 3, size, size), np.zeros((68, 2)), mask)
    keep = torch.zeros(1, 1, 40, 40)
    keep[..., :, :10] = 1.0  # the photo's left quarter is kept
    editable = editable_mask(frame, keep)[0, 0]
    assert torch.equal(editable_mask(frame, None), mask)
    assert editable[:30].sum() == 0 and editable[:, :30].sum() == 0  # beyond the photo's top and left
    assert (editable[30:, 30:40] < 1e-3).all()  # the kept quarter
    assert (editable[30:, 40:] > 0.999).all()  # the rest of the photo
