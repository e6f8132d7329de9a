"""One swap run written to disk: OUT.png plus OUT.json (the run record that eval and ablate read)."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

import torch

from optimswap import __version__
from optimswap.config import SwapConfig
from optimswap.io import ImageError, write_image, write_json


def record_path(output: Path) -> Path:
    return Path(output).with_suffix(".json")


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Never write over an input; replace an existing result only when asked."""
    out = Path(output).resolve()
    for p in inputs:
        if Path(p).resolve() in (out, record_path(out)):
            raise ImageError(f"refusing to overwrite an input: {p}")
    for p in (out, record_path(out)):
        if p.exists() and not overwrite:
            raise ImageError(f"{p} exists; pass --overwrite to replace it")


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA, else this process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_swap(source: Path, target: Path | list[Path], output: Path, cfg: SwapConfig, face_index: int = 0,
             progress: bool = True, overwrite: bool = False, extra: dict | None = None) -> dict:
    """Swap, write OUTPUT and its record (last, so a record means a finished run); returns the record."""
    from optimswap.swap import list_images, swap

    target_paths = list_images(target)
    check_output(output, [source, *target_paths], overwrite)
    result = swap(source, target_paths, cfg, face_index=face_index, progress=progress)
    write_image(output, result.image)
    device = result.frame_result.device
    record = {
        "optimswap": __version__, "command": "swap", "source": str(Path(source).resolve()),
        "target": [str(Path(p).resolve()) for p in target] if isinstance(target, (list, tuple)) else str(Path(target).resolve()),
        "output": str(Path(output).resolve()), "options": cfg.to_dict(), "face_index": face_index,
        "source_face_box": result.source_face.box, "targets_used": result.targets.used,
        "targets_skipped": result.targets.skipped, "timings": result.timings,
        "evaluations": len(result.history), "peak_memory_mb": peak_memory_mb(device),
        "loss_history": result.history, **(extra or {}),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)},
    }
    write_json(record_path(output), record)
    return record
