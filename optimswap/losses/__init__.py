"""Loss terms: one module each; every term is a plain function plus a thin nn.Module."""

from optimswap.losses.content import ContentLoss, content_loss
from optimswap.losses.gram import GramLoss, gram_loss, gram_matrix
from optimswap.losses.histogram import HistogramLoss, histogram_loss, histogram_targets, region_pixels
from optimswap.losses.lighting import LightingLoss, lighting_loss
from optimswap.losses.luminance import LuminanceLoss, luminance_loss
from optimswap.losses.patch import (
    Matches,
    PatchStyleLoss,
    TargetRows,
    Voted,
    WindowSearch,
    nearest_patches,
    nearest_patches_global,
    principal_projection,
    project,
    target_rows,
    vote,
)
from optimswap.losses.tv import TVLoss, tv_loss

__all__ = ["ContentLoss", "GramLoss", "HistogramLoss", "LightingLoss", "LuminanceLoss", "Matches", "PatchStyleLoss",
           "TVLoss", "TargetRows", "Voted", "WindowSearch", "content_loss", "gram_loss", "gram_matrix",
           "histogram_loss", "histogram_targets", "lighting_loss", "luminance_loss", "nearest_patches",
           "nearest_patches_global", "principal_projection", "project", "region_pixels", "target_rows", "tv_loss",
           "vote"]
