"""Post-processing: colour matching and blending into the full photo."""

from optimswap.compose.blend import gaussian_blur, laplacian_blend
from optimswap.compose.color import match_color, with_coarse_color

__all__ = ["gaussian_blur", "laplacian_blend", "match_color", "with_coarse_color"]
