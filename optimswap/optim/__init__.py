"""Image pyramid and the L-BFGS loop."""

from optimswap.optim.lbfgs import run_lbfgs
from optimswap.optim.pyramid import level_sizes, pool_to, resize_to

__all__ = ["level_sizes", "pool_to", "resize_to", "run_lbfgs"]
