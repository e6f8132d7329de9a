"""optimswap: face edits in single photos by per-image optimization."""

from optimswap.config import PRESETS, SwapConfig, preset

__version__ = "0.1.0"
__all__ = ["PRESETS", "SwapConfig", "preset", "__version__"]
