"""Post-processing: colour matching and blending into the full photo."""

from optimswap.compose.blend import laplacian_blend
from optimswap.compose.color import match_color

__all__ = ["laplacian_blend", "match_color"]
