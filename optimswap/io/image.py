"""Reading and writing photos: clear errors for bad files, atomic writes, inputs never overwritten."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from optimswap.errors import ImageError

MAX_PIXELS = 50_000_000  # ~ a 8660x5770 photo; beyond that a per-image optimization has no sense here
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(photos: str | os.PathLike | list | tuple) -> list[Path]:
    """A folder's images (sorted by name) or an explicit list of files."""
    if isinstance(photos, (list, tuple)):
        paths = [Path(p) for p in photos]
    else:
        folder = Path(photos)
        if not folder.is_dir():
            raise ImageError(f"{folder}: expected a folder of photos")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{photos}: no photos found")
    return paths


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as an RGB uint8 array (H, W, 3), EXIF orientation applied."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{path}: {im.width}x{im.height} is larger than {MAX_PIXELS} pixels; "
                                 "downscale it first")
            upright = ImageOps.exif_transpose(im)
            return np.asarray(_to_8bit(upright).convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: not a readable image ({err})") from err


def _to_8bit(im: Image.Image) -> Image.Image:
    """Greyscale deeper than 8 bits (modes I;16*, I, F) as 8-bit 'L': ``convert('RGB')`` clips such values at 255,
    which turns a 16-bit photo white. 16 bits are divided by 257 (65535 -> 255); 32-bit integers and floats are
    read by their range: within [0, 1] (floats) as fractions, within [0, 255] as 8 bits, within [0, 65535] as 16
    bits, anything else stretched from its minimum to its maximum."""
    if im.mode.startswith("I;16"):
        values = np.asarray(im, dtype=np.float64) / 257.0
    elif im.mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(values.min()), float(values.max())
        offset, scale = 0.0, 1.0
        if im.mode == "F" and lo >= 0 and hi <= 1:
            scale = 255.0
        elif lo >= 0 and 255 < hi <= 65535:
            scale = 1 / 257.0
        elif lo < 0 or hi > 65535:
            offset, scale = lo, 255.0 / max(hi - lo, 1e-12)
        values = (values - offset) * scale
    else:
        return im
    return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8))


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 array atomically (a reader never sees half a file)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown image extension")
    _atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format=fmt))


def write_json(path: str | os.PathLike, data: dict) -> None:
    def dump(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)

    _atomic_write(Path(path), dump)


def _json_default(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def to_tensor(image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32) / 255.0


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected (1, 3, H, W), got {tuple(image.shape)}")
    return (image[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
