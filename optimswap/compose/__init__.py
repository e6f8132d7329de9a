"""Post-processing: colour matching and blending into the full photo."""

from optimswap.compose.blend import LaplacianBlend, laplacian_blend
from optimswap.compose.color import MatchColor, match_color

__all__ = ["LaplacianBlend", "MatchColor", "laplacian_blend", "match_color"]
