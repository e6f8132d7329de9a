"""Offline attribute scores from the 68 landmarks of the project's face detector (dlib's shape predictor by
default; no recognition network): ``optimswap directions fit`` labels generated images with them, and eval reports
them before and after an edit. Each is a geometric ratio of landmarks, blind to identity and lighting.

- ``smile``: mouth aspect ratio, the inner lips' mean opening (61-67, 62-66, 63-65) over the inner mouth's width
  (60-64): about 0 closed, 0.2-0.4 for an open smile or speech.
- ``yaw``: head yaw in degrees from the landmark pose fit (``optimswap.eval.metrics.head_pose``); > 0 turns the
  face towards image right.
- ``eyes_open``: eye aspect ratio (Soukupová & Čech 2016), the lids' two openings over the eye's width, mean of
  both eyes: about 0.3 open, under 0.2 closing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from optimswap.errors import OptionError
from optimswap.eval.metrics import head_pose
from optimswap.face import detect_faces
from optimswap.face.align import LEFT_EYE, RIGHT_EYE
from optimswap.io import to_numpy


def _gap(landmarks: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(landmarks[a] - landmarks[b]))


def mouth_aspect(landmarks: np.ndarray) -> float:
    opening = (_gap(landmarks, 61, 67) + _gap(landmarks, 62, 66) + _gap(landmarks, 63, 65)) / 3
    return opening / _gap(landmarks, 60, 64)


def eye_aspect(landmarks: np.ndarray) -> float:
    def one(eye: np.ndarray) -> float:  # corners 0 and 3, upper lid 1 2, lower lid 5 4
        return (_gap(eye, 1, 5) + _gap(eye, 2, 4)) / (2 * _gap(eye, 0, 3))

    return (one(landmarks[LEFT_EYE]) + one(landmarks[RIGHT_EYE])) / 2


def yaw(landmarks: np.ndarray) -> float:
    return float(head_pose(landmarks)[0])


ATTRIBUTES: dict[str, Callable[[np.ndarray], float]] = {"smile": mouth_aspect, "yaw": yaw, "eyes_open": eye_aspect}


def check_attributes(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise OptionError("attr", f"no scorer for {', '.join(unknown)}; choose from {', '.join(ATTRIBUTES)}")


def landmark_scorer(names: Sequence[str], backend: str = "dlib") -> Callable[[torch.Tensor], torch.Tensor]:
    """Images (B, 3, R, R) in [0, 1] -> (B, len(names)) scores of the largest face in each; NaN where none is
    found (a fit skips those)."""
    check_attributes(names)

    def score(images: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(images), len(names)), math.nan)
        for i, image in enumerate(images):
            faces = detect_faces(to_numpy(image[None]), backend)
            if faces:
                out[i] = torch.tensor([ATTRIBUTES[n](faces[0].landmarks) for n in names])
        return out

    return score
