"""One edit run written to disk: OUT.png plus OUT.json, the run record that eval and ablate read."""

from __future__ import annotations

import itertools
import os
import platform
import resource
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from optimswap import __version__
from optimswap.config import EditConfig
from optimswap.errors import ImageError
from optimswap.io import list_images
from optimswap.io.image import (
    FileAppeared,
    check_outputs,
    check_space,
    image_file,
    image_format,
    json_file,
    photo_pixels,
    picture_bytes,
    warn_if_lossy,
    write_files,
)
from optimswap.pipeline import EditResult, step
from optimswap.registry import PhotoLike, get_edit, run_edit

# Files a run writes besides its picture and record: role -> (the suffix that replaces the picture's,
# write(result, path)); the record names each under its role.
Attachments = Mapping[str, tuple[str, Callable[[Any, Path], object]]]


def record_path(output: str | os.PathLike) -> Path:
    return Path(output).with_suffix(".json")


def run_files(output: str | os.PathLike, attachments: Attachments | None = None) -> dict[str, Path]:
    """Every file a run writes, by role: the picture ("output"), its record, the attachments."""
    output = Path(output)
    return {"output": output, "record": record_path(output),
            **{role: output.with_suffix(suffix) for role, (suffix, _) in (attachments or {}).items()}}


def input_paths(edit_name: str, source: PhotoLike, inputs: Mapping[str, Any],
                cfg: EditConfig | None = None) -> list[Path]:
    """Every file a run reads (for the never-overwrite-an-input check): photos, and files its options name."""
    edit = get_edit(edit_name)
    paths = [] if not isinstance(source, (str, os.PathLike)) else [Path(source)]
    paths += [Path(p) for p in (cfg.input_files() if cfg is not None else [])]
    for spec in edit.inputs:
        value = inputs[spec.name]
        if spec.kind == "photos":
            paths += list_images(value)
        elif isinstance(value, (str, os.PathLike)):
            paths.append(Path(value))
    return paths


RECORD_BYTES = 2**20  # a record with a long loss history takes a few hundred KB


def check_output(output: Path, inputs: list[Path], overwrite: bool, attachments: Attachments | None = None,
                 pixels: int | None = None) -> None:
    """Before any work: the picture, its record and attachments can be written there, never over an input, and over
    an existing result only when asked; the picture of ``pixels`` and its record fit in the free space (attachments
    are not counted); a format that changes the whole photo is said in one line."""
    output = Path(output)
    image_format(output)
    files = list(run_files(output, attachments).values())
    written = [p.resolve() for p in files]
    for p in inputs:
        if Path(p).resolve() in written:
            raise ImageError(f"refusing to overwrite an input: {p}")
    check_outputs(files, overwrite)
    if pixels is not None:
        check_space([(output, picture_bytes(output, pixels)), (record_path(output), RECORD_BYTES)])
    warn_if_lossy(output)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA, else this process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_run(edit_name: str, output: Path, result: EditResult, cfg: EditConfig, face_index: int = 0,
              extra: dict | None = None, overwrite: bool = False, attachments: Attachments | None = None) -> dict:
    """Write an edit's picture, its record and attachments as one (the record lands first, the picture last, so a
    picture always has the others); returns the record. Without ``overwrite`` a file that appeared at one of them
    during the run is left alone and the result is kept under the first free name OUTPUT-N (then ImageError says
    where)."""
    output = Path(output)
    device = result.frame_result.device
    record = {
        "optimswap": __version__, "edit": edit_name, **result.record, "face_index": face_index,
        "output": str(output.resolve()), "options": cfg.to_dict(), "source_face_box": result.source_face.box,
        "timings": result.timings, "evaluations": len(result.history), "recoveries": result.recoveries,
        "peak_memory_mb": peak_memory_mb(device),
        **(extra or {}), "loss_history": result.history,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)},
    }
    try:
        _write_all(output, result, record, overwrite, attachments)
        return record
    except FileAppeared as err:
        appeared = err.filename
    for n in itertools.count(1):
        kept = output.with_name(f"{output.stem}-{n}{output.suffix}")
        if any(p.exists() for p in run_files(kept, attachments).values()):
            continue
        record["output"] = str(kept.resolve())
        try:
            _write_all(kept, result, record, False, attachments)
            break
        except FileAppeared:  # taken meanwhile too
            continue
    raise ImageError(f"{appeared} appeared during the run and was left alone; the result was kept as {kept} and "
                     f"{record_path(kept)}")


def _write_all(output: Path, result: Any, record: dict, overwrite: bool, attachments: Attachments | None) -> None:
    files = run_files(output, attachments)
    record.update({role: str(files[role].resolve()) for role in attachments or {}})
    attached = [(files[role], lambda tmp, write=write: write(result, tmp))
                for role, (_, write) in (attachments or {}).items()]
    source = record.get("source")  # a JPEG result is written with a JPEG source's settings
    picture = image_file(output, result.image, source if source and Path(source).is_file() else None)
    write_files([json_file(files["record"], record), *attached, picture], overwrite)


def run_to_files(edit_name: str, source: PhotoLike, inputs: Mapping[str, Any], output: Path, cfg: EditConfig,
                 face_index: int = 0, progress: bool = True, overwrite: bool = False,
                 extra: dict | None = None, attachments: Attachments | None = None) -> dict:
    """Run an edit and write OUTPUT, its record and ``attachments`` (all checked before the run starts); returns
    the record."""
    check_output(output, input_paths(edit_name, source, inputs, cfg), overwrite, attachments, photo_pixels(source))
    result = run_edit(edit_name, source, inputs, cfg, face_index, progress=progress)
    step(f"writing {output}", progress)
    return write_run(edit_name, output, result, cfg, face_index, extra, overwrite, attachments)
