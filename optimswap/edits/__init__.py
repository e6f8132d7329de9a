"""The built-in edits; importing this package registers them (see ``optimswap.registry``)."""

from optimswap.edits.makeup import MakeupConfig, MakeupResult, makeup
from optimswap.edits.stylize import StylizeConfig, StylizeResult, stylize
from optimswap.edits.swap import SwapConfig, SwapResult, swap
from optimswap.gan.edit import InvertResult, invert
from optimswap.gan.invert import InvertConfig

__all__ = ["InvertConfig", "InvertResult", "MakeupConfig", "MakeupResult", "StylizeConfig", "StylizeResult",
           "SwapConfig", "SwapResult", "invert", "makeup", "stylize", "swap"]
