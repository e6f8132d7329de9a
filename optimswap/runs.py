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


def write_run(command: str, output: Path, result, cfg: SwapConfig, inputs: dict, extra: dict | None = None) -> dict:
    """Write an edit's picture, then its record (last, so a record means a finished run); returns the record."""
    write_image(output, result.image)
    device = result.frame_result.device
    record = {
        "optimswap": __version__, "command": command, **inputs, "output": str(Path(output).resolve()),
        "options": cfg.to_dict(), "source_face_box": result.source_face.box, "timings": result.timings,
        "evaluations": len(result.history), "peak_memory_mb": peak_memory_mb(device), **(extra or {}),
        "loss_history": result.history,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)},
    }
    write_json(record_path(output), record)
    return record


def run_swap(source: Path, target: Path | list[Path], output: Path, cfg: SwapConfig, face_index: int = 0,
             progress: bool = True, overwrite: bool = False, extra: dict | None = None) -> dict:
    """Swap and write OUTPUT + its record."""
    from optimswap.swap import list_images, swap

    target_paths = list_images(target)
    check_output(output, [source, *target_paths], overwrite)
    result = swap(source, target_paths, cfg, face_index=face_index, progress=progress)
    inputs = {"source": str(Path(source).resolve()), "face_index": face_index,
              "target": [str(Path(p).resolve()) for p in target] if isinstance(target, (list, tuple)) else str(Path(target).resolve())}
    return write_run("swap", output, result, cfg, inputs, {"targets_used": result.targets.used,
                                                            "targets_skipped": result.targets.skipped, **(extra or {})})


def run_makeup(plain: Path, reference: Path, output: Path, cfg: SwapConfig, face_index: int = 0,
               progress: bool = True, overwrite: bool = False, extra: dict | None = None) -> dict:
    """Makeup transfer and write OUTPUT + its record."""
    from optimswap.makeup import makeup

    check_output(output, [plain, reference], overwrite)
    result = makeup(plain, reference, cfg, face_index=face_index, progress=progress)
    inputs = {"source": str(Path(plain).resolve()), "reference": str(Path(reference).resolve()), "face_index": face_index}
    return write_run("makeup", output, result, cfg, inputs, extra)
