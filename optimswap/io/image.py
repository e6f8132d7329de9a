"""Reading and writing photos: clear errors for bad files; outputs checked before any work and written atomically,
several files as one, never half of them after a signal."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from optimswap.errors import ImageError, OptionError

log = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # ~ a 8660x5770 photo; beyond that a per-image optimization has no sense here
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(photos: str | os.PathLike | list | tuple) -> list[Path]:
    """A folder's images (sorted by name) or an explicit list of files."""
    if isinstance(photos, (list, tuple)):
        paths = [Path(p) for p in photos]
        folders = [p for p in paths if p.is_dir()]
        if folders:
            raise ImageError(f"{folders[0]} is a folder; give one folder of photos or several photo files")
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


def image_format(path: str | os.PathLike) -> str:
    """The PIL format that writes RGB pictures under ``path``'s extension."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt in Image.SAVE:
        try:  # some formats take no RGB (XBM, Palm) or lack their plugin (HDF5, WMF)
            Image.new("RGB", (1, 1)).save(BytesIO(), format=fmt)
            return fmt
        except (OSError, ValueError, KeyError):
            pass
    what = f"with the extension {path.suffix!r}" if path.suffix else "without an extension"
    raise ImageError(f"{path}: cannot write a picture {what}; use e.g. .png or .jpg")


# Formats whose pictures hold the pixels as given; any other (JPEG, GIF's palette, ...) changes them, the whole photo.
LOSSLESS_FORMATS = {"PNG", "TIFF", "BMP", "WEBP", "PPM", "TGA", "SGI", "IM", "PCX", "DIB", "QOI"}
SAVE_OPTIONS = {"WEBP": {"lossless": True}}  # PIL writes lossy WebP by default


def jpeg_settings(source: str | os.PathLike | None) -> dict[str, Any]:
    """How a JPEG result is written: with a JPEG source's own quantization tables and chroma subsampling, so that
    blocks the edit did not touch come out as re-saving the source would make them; else quality 95 without chroma
    subsampling."""
    if source is not None:
        with contextlib.suppress(OSError, UnidentifiedImageError), Image.open(source) as im:
            if isinstance(im, JpegImagePlugin.JpegImageFile) and im.quantization:
                return {"qtables": im.quantization, "subsampling": JpegImagePlugin.get_sampling(im)}
    return {"quality": 95, "subsampling": 0}


def save_options(path: str | os.PathLike, source: str | os.PathLike | None = None) -> dict[str, Any]:
    """PIL ``save`` keywords for a picture at ``path`` (format from the extension) made from ``source``."""
    fmt = image_format(path)
    return {"format": fmt, **(jpeg_settings(source) if fmt == "JPEG" else SAVE_OPTIONS.get(fmt, {}))}


def warn_if_lossy(path: str | os.PathLike) -> None:
    """One line when ``path``'s format re-encodes the whole photo: outside the face the pixels then are not the
    source's."""
    fmt = image_format(path)
    if fmt == "JPEG":
        log.warning("%s is a JPEG: the whole photo is re-encoded (with the source's own settings when it is a JPEG: "
                    "farther than 16 px from the edit as re-saving the source would); use .png to keep the source's "
                    "pixels exactly", path)
    elif fmt not in LOSSLESS_FORMATS:
        log.warning("%s: %s does not keep the pixels as they are; use .png to keep the source's pixels exactly",
                    path, fmt)


def _nearest_folder(path: str | os.PathLike) -> Path | None:
    """The existing folder a file at ``path`` would be written under (its folder, else the nearest above it)."""
    start = Path(path).parent
    return next((p for p in (start, *start.parents) if p.is_dir()), None)


def free_space(path: str | os.PathLike) -> int | None:
    """Bytes free for a file at ``path`` (on the nearest existing folder's filesystem); None where unknown."""
    nearest = _nearest_folder(path)
    try:
        return None if nearest is None else shutil.disk_usage(nearest).free
    except OSError:
        return None


def check_space(needs: Sequence[tuple[str | os.PathLike, int]], option: str = "output") -> None:
    """OptionError naming the first file when ``needs`` (path, bytes) does not fit in the free space of its
    filesystem (files on one filesystem count together)."""
    totals: dict[int, int] = {}
    for path, size in needs:
        nearest = _nearest_folder(path)
        if nearest is None:
            continue
        device = nearest.stat().st_dev
        totals[device] = totals.get(device, 0) + size
        free = free_space(path)
        if free is not None and totals[device] > free:
            raise OptionError(option, f"{path}: about {_megabytes(totals[device])} needed, {_megabytes(free)} free "
                                      f"on that disk")


def picture_bytes(path: str | os.PathLike, pixels: int) -> int:
    """About the most a picture of ``pixels`` takes at ``path``: 3 bytes a pixel in a lossless format (a PNG of a
    photo takes 40-70 % of that), 1 in another (JPEG at quality 95: 0.3-0.6)."""
    return (3 if image_format(path) in LOSSLESS_FORMATS else 1) * pixels


def photo_pixels(photo: str | os.PathLike | np.ndarray) -> int | None:
    """A photo's pixel count from its header (an array's shape); None when it cannot be read (reported later)."""
    if isinstance(photo, np.ndarray):
        return photo.shape[0] * photo.shape[1]
    try:
        with Image.open(photo) as im:
            return im.width * im.height
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def check_writable(path: str | os.PathLike, folder: bool = False, option: str = "output") -> None:
    """Fail now, before any work, where a file (with ``folder``: a folder of files) could not be written at
    ``path`` later: something else is in the way, or the nearest existing folder does not let a file be created
    (no permission, a read-only or immutable folder, /proc). Missing folders are fine: writing makes them."""
    path = Path(path)
    start = path if folder else path.parent
    try:
        if path.exists() and not (path.is_dir() if folder else path.is_file()):
            kind = "a folder" if path.is_dir() else "not a folder" if folder else "not a regular file"
            raise OptionError(option, f"{path} is {kind}")
        nearest = next(p for p in (start, *start.parents) if p.exists())
    except OSError as err:  # a folder on the way that may not be looked into
        raise OptionError(option, f"{path}: {err.strerror}") from err
    if not nearest.is_dir():
        raise OptionError(option, f"{path}: {nearest} is a file, not a folder")
    try:  # a real file made and removed: permissions, read-only or immutable mounts and /proc all show
        with _signals_held(), tempfile.NamedTemporaryFile(dir=nearest, prefix=".optimswap-probe-"):
            pass
    except OSError as err:
        raise OptionError(option, f"{path}: cannot create files in {nearest} ({err.strerror})") from err


def check_outputs(paths: Sequence[str | os.PathLike], overwrite: bool) -> None:
    """``check_writable`` for each of ``paths``, and an existing one is replaced only with ``overwrite``."""
    for path in map(Path, paths):
        check_writable(path)
        if path.exists() and not overwrite:
            raise OptionError("overwrite", f"{path} exists; it is replaced only with this option")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then reach their handlers. Python runs handlers in the main
    thread whichever thread the signal hits (torch has several), so it is the handlers that wait here, not the
    thread's signal mask (pthread_sigmask leaves the other threads to take the signal)."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be changed there
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler not in (signal.SIG_IGN, None):  # None: set outside Python, could not be put back
            previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


# Temp files name their writer (host, process), so that a later write can tell those of a killed one (SIGKILL, power
# loss) from those of a writer still at work.
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-[0-9a-f]{8}(?P<suffix>\.[^.]*)?")


def is_temp(path: str | os.PathLike) -> bool:
    """A hidden temp file ``write_files`` makes beside a file it writes."""
    return TEMP_NAME.fullmatch(Path(path).name) is not None


def _writer_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: another user's process lives
        return False
    return False


def remove_stale_temps(path: Path) -> None:
    """Remove the temp files of ``path`` left by writers on this host that no longer run (a reused process id
    keeps them: only files that surely lost their writer go)."""
    with contextlib.suppress(OSError):
        for candidate in path.parent.glob(f".{glob.escape(path.name)}.*"):
            match = TEMP_NAME.fullmatch(candidate.name)
            if match is None or (match["name"], match["suffix"] or "", match["host"]) != (path.name, path.suffix, HOST):
                continue
            if _writer_gone(int(match["pid"])):
                with _signals_held():
                    candidate.unlink(missing_ok=True)


def _new_temp(path: Path) -> Path:
    """An empty hidden file beside ``path`` (mode as a plain open gives it, umask applied, unlike mkstemp)."""
    while True:
        tmp = path.with_name(f".{path.name}.{HOST}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


class FileAppeared(FileExistsError):
    """A file that was not to be replaced is where ``write_files`` was to put one (``filename`` says which)."""


def _place_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless a file is there (FileAppeared): never replaces one that appeared."""
    try:
        try:
            os.link(tmp, path)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            # No hard links here (FAT, some network mounts): claim the name exclusively, then move onto the claim.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            try:
                os.replace(tmp, path)
            except BaseException:
                path.unlink()
                raise
            return
    except FileExistsError as err:
        raise FileAppeared(errno.EEXIST, "a file appeared there while writing", str(path)) from err
    os.unlink(tmp)


def _place(temps: list[Path], paths: list[Path], overwrite: bool) -> None:
    placed: list[Path] = []
    try:
        for tmp, path in zip(temps, paths, strict=True):
            if overwrite:
                os.replace(tmp, path)
            else:
                _place_new(tmp, path)
            placed.append(path)
    except OSError:
        if not overwrite:  # all or none: the files placed so far are this call's own
            for path in placed:
                path.unlink()
        raise


def write_files(files: Sequence[tuple[Path, Callable[[Path], object]]], overwrite: bool = True,
                option: str = "output") -> None:
    """Write files as one: each ``write(tmp)`` fills a hidden temp file beside its path, then they are moved into
    place in the given order with SIGINT and SIGTERM held back, so an interruption leaves them all old or all new
    and a reader that sees the last one sees the others. Without ``overwrite`` no file is replaced, not even one
    that appeared meanwhile: FileAppeared, and none is placed. No temp file remains, whatever happens; temps that
    killed writers left at these paths are removed. A full disk (or quota) is an OptionError on ``option`` naming
    the file."""
    temps: list[Path] = []
    path = Path()
    try:
        for path, write in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(path)
            with _signals_held():  # listed as soon as it exists, so the cleanup below always knows it
                temps.append(_new_temp(path))
            write(temps[-1])
        with _signals_held():
            _place(temps, [path for path, _ in files], overwrite)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        free = free_space(path)
        raise OptionError(option, f"{path}: no space left on that disk ({err.strerror}"
                                  + (f"; {_megabytes(free)} free" if free is not None else "") + "); nothing written"
                          ) from err
    finally:
        with _signals_held():
            for tmp in temps:
                tmp.unlink(missing_ok=True)


def image_file(path: str | os.PathLike, image: np.ndarray,
               source: str | os.PathLike | None = None) -> tuple[Path, Callable[[Path], None]]:
    """``write_files``' entry for an RGB uint8 picture (format from the extension; a JPEG like ``source``, see
    ``jpeg_settings``)."""
    path = Path(path)
    options = save_options(path, source)
    return path, lambda tmp: Image.fromarray(image).save(tmp, **options)


def json_file(path: str | os.PathLike, data: dict | list) -> tuple[Path, Callable[[Path], None]]:
    """``write_files``' entry for ``data`` as indented JSON (numpy values, tensors and paths as plain JSON)."""
    def dump(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)

    return Path(path), dump


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 array atomically (a reader never sees half a file)."""
    write_files([image_file(path, image)])


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as JSON atomically."""
    write_files([json_file(path, data)])


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
    if not image.flags.writeable:  # a read-only array (a decoded video frame) makes torch warn; the copy is uint8
        image = image.copy()
    return torch.from_numpy(image).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32) / 255.0


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected (1, 3, H, W), got {tuple(image.shape)}")
    return (image[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
