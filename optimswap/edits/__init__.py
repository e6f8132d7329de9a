"""The built-in edits; importing this package registers them (see ``optimswap.registry``)."""

from optimswap.edits.makeup import MakeupConfig, MakeupResult, makeup
from optimswap.edits.stylize import StylizeConfig, StylizeResult, stylize
from optimswap.edits.swap import SwapConfig, SwapResult, swap
from optimswap.gan.invert import InvertConfig, InvertResult, invert

__all__ = ["InvertConfig", "InvertResult", "MakeupConfig", "MakeupResult", "StylizeConfig", "StylizeResult",
           "SwapConfig", "SwapResult", "invert", "makeup", "stylize", "swap"]
