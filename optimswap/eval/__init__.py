"""Evaluation: objective metrics of an edit, and the reports of runs and sweeps built on them."""

from optimswap.eval.metrics import (
    border_gradient,
    head_pose,
    high_frequency_ratio,
    histogram_distance,
    identity_distance,
    landmark_nme,
    lighting,
    lighting_error,
    nearest_identity,
    psnr,
    skin_tone_distance,
)

__all__ = ["border_gradient", "head_pose", "histogram_distance", "high_frequency_ratio", "identity_distance",
           "landmark_nme", "lighting", "lighting_error", "nearest_identity", "psnr",
           "skin_tone_distance"]
