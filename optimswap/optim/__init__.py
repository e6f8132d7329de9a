"""Image pyramid and the solvers (L-BFGS, Adam) that every edit runs through."""

from optimswap.optim.pyramid import level_sizes, pool_to, resize_to
from optimswap.optim.solver import LBFGS, Adam, Solver, make_solver, ramped_lr

__all__ = ["LBFGS", "Adam", "Solver", "level_sizes", "make_solver", "pool_to", "ramped_lr", "resize_to"]
