"""The built-in edits; importing this package registers them (see ``optimswap.registry``)."""

from optimswap.edits.makeup import MakeupConfig, MakeupResult, makeup
from optimswap.edits.swap import SwapConfig, SwapResult, swap

__all__ = ["MakeupConfig", "MakeupResult", "SwapConfig", "SwapResult", "makeup", "swap"]
