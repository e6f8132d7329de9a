"""Identity sets for evaluation: the dlib descriptor of a photo's face, the mean of a person's photos, the
person folders that identity retrieval chooses among. Evaluation only: no method may use the judge."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from optimswap.errors import ImageError
from optimswap.face import detect_faces, face_descriptor
from optimswap.io import list_images, read_image


@functools.cache
def photo_descriptor(path: str) -> np.ndarray | None:
    """dlib descriptor of the largest face in a photo, None when there is none or the file is unreadable (cached
    per path)."""
    try:
        image = read_image(path)
    except ImageError:
        return None
    faces = detect_faces(image)
    return face_descriptor(image, faces[0]) if faces else None


def identity_mean(paths: list[Path]) -> np.ndarray:
    descriptors = [d for d in (photo_descriptor(str(p)) for p in paths) if d is not None]
    if not descriptors:
        raise ImageError(f"no face found in any of {len(paths)} photos")
    return np.mean(descriptors, 0)


def identity_sets(root: Path) -> dict[str, list[Path]]:
    """Sub-folders of ``root`` that hold photos, by name (the candidates of identity retrieval)."""
    sets = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        try:
            sets[folder.name] = list_images(folder)
        except ImageError:
            continue
    return sets
