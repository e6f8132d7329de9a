"""One edit run written to disk: OUT.png plus OUT.json, the run record that eval and ablate read."""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from optimswap import __version__
from optimswap.config import EditConfig
from optimswap.errors import ImageError, OptionError
from optimswap.io import list_images, write_image, write_json
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
    """Never write over an input; replace an existing result only when asked."""
    out = Path(output).resolve()
    for p in inputs:
        if Path(p).resolve() in (out, record_path(out)):
            raise ImageError(f"refusing to overwrite an input: {p}")
    for p in (out, record_path(out)):
        if p.exists() and not overwrite:
            raise OptionError("overwrite", f"{p} exists; it is replaced only with this option")


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA, else this process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_run(edit_name: str, output: Path, result: EditResult, cfg: EditConfig, face_index: int = 0,
              extra: dict | None = None) -> dict:
    """Write an edit's picture, then its record (last, so a record means a finished run); returns the record."""
    write_image(output, result.image)
    device = result.frame_result.device
    record = {
        "optimswap": __version__, "edit": edit_name, **result.record, "face_index": face_index,
        "output": str(Path(output).resolve()), "options": cfg.to_dict(), "source_face_box": result.source_face.box,
        "timings": result.timings, "evaluations": len(result.history), "recoveries": result.recoveries,
        "peak_memory_mb": peak_memory_mb(device),
        **(extra or {}), "loss_history": result.history,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)},
    }
    write_json(record_path(output), record)
    return record


def run_to_files(edit_name: str, source: PhotoLike, inputs: Mapping[str, Any], output: Path, cfg: EditConfig,
                 face_index: int = 0, progress: bool = True, overwrite: bool = False,
                 extra: dict | None = None) -> dict:
    """Run an edit and write OUTPUT + its record; returns the record."""
    check_output(output, input_paths(edit_name, source, inputs), overwrite)
    result = run_edit(edit_name, source, inputs, cfg, face_index, progress=progress)
    return write_run(edit_name, output, result, cfg, face_index, extra)
