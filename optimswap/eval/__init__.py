"""Evaluation: objective metrics of an edit, and the reports of runs and sweeps built on them."""

from optimswap.eval.metrics import (head_pose, high_frequency_ratio, identity_distance, landmark_nme, lighting,
                                    lighting_error, nearest_identity, psnr)

__all__ = ["head_pose", "high_frequency_ratio", "identity_distance", "landmark_nme", "lighting", "lighting_error",
           "nearest_identity", "psnr"]
