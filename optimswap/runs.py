"""One edit run written to disk: OUT.png plus OUT.json, the run record that eval and ablate read."""

from __future__ import annotations

import itertools
import os
import platform
import resource
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimswap import __version__
from optimswap.config import EditConfig
from optimswap.errors import ImageError
from optimswap.io import list_images
from optimswap.io.image import FileAppeared, check_outputs, image_file, image_format, json_file, write_files
from optimswap.pipeline import EditResult
from optimswap.registry import PhotoLike, get_edit, run_edit


def record_path(output: str | os.PathLike) -> Path:
    return Path(output).with_suffix(".json")


def input_paths(edit_name: str, source: PhotoLike, inputs: Mapping[str, Any]) -> list[Path]:
    """Every file a run reads (for the never-overwrite-an-input check)."""
    edit = get_edit(edit_name)
    paths = [] if not isinstance(source, (str, os.PathLike)) else [Path(source)]
    for spec in edit.inputs:
        value = inputs[spec.name]
        if spec.kind == "photos":
            paths += list_images(value)
        elif isinstance(value, (str, os.PathLike)):
            paths.append(Path(value))
    return paths


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Before any work: the picture and its record can be written there, never over an input, and over an existing
    result only when asked."""
    output = Path(output)
    image_format(output)
    out = output.resolve()
    for p in inputs:
        if Path(p).resolve() in (out, record_path(out)):
            raise ImageError(f"refusing to overwrite an input: {p}")
    check_outputs([output, record_path(output)], overwrite)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA, else this process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_run(edit_name: str, output: Path, result: EditResult, cfg: EditConfig, face_index: int = 0,
              extra: dict | None = None, overwrite: bool = False) -> dict:
    """Write an edit's picture and its record as one (the record lands first, so a picture always has its record);
    returns the record. Without ``overwrite`` a file that appeared at OUTPUT during the run is left alone and the
    result is kept under the first free name OUTPUT-N (then ImageError says where)."""
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
        _write_pair(output, result.image, record, overwrite)
        return record
    except FileAppeared as err:
        appeared = err.filename
    for n in itertools.count(1):
        kept = output.with_name(f"{output.stem}-{n}{output.suffix}")
        if kept.exists() or record_path(kept).exists():
            continue
        record["output"] = str(kept.resolve())
        try:
            _write_pair(kept, result.image, record, overwrite=False)
            break
        except FileAppeared:  # taken meanwhile too
            continue
    raise ImageError(f"{appeared} appeared during the run and was left alone; the result was kept as {kept} and "
                     f"{record_path(kept)}")


def _write_pair(output: Path, image: np.ndarray, record: dict, overwrite: bool) -> None:
    write_files([json_file(record_path(output), record), image_file(output, image)], overwrite)


def run_to_files(edit_name: str, source: PhotoLike, inputs: Mapping[str, Any], output: Path, cfg: EditConfig,
                 face_index: int = 0, progress: bool = True, overwrite: bool = False,
                 extra: dict | None = None) -> dict:
    """Run an edit and write OUTPUT + its record (both checked before the run starts); returns the record."""
    check_output(output, input_paths(edit_name, source, inputs), overwrite)
    result = run_edit(edit_name, source, inputs, cfg, face_index, progress=progress)
    return write_run(edit_name, output, result, cfg, face_index, extra, overwrite)
