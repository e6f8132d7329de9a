"""optimswap: face edits in single photos by per-image optimization.

Every edit runs through one pipeline (``optimswap.pipeline``); edits are looked up by name in
``optimswap.registry``. ``swap`` and ``makeup`` are the built-in edits' entry points.
"""

__version__ = "0.2.0"

from optimswap.edits import MakeupConfig, SwapConfig, makeup, swap  # noqa: E402  (registers the built-in edits)
from optimswap.errors import OptimswapError  # noqa: E402
from optimswap.registry import edit_names, get_edit, run_edit  # noqa: E402

__all__ = ["MakeupConfig", "OptimswapError", "SwapConfig", "__version__", "edit_names", "get_edit", "makeup",
           "run_edit", "swap"]
