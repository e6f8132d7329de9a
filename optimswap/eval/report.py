"""Score finished runs from their records (OUT.json): one row of metrics per run, tables and CSV/JSON files.

The rows share the metrics every edit has (background kept, face detail, identity to the source, cost); the
edit named in the record adds its own (``Edit.score``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from optimswap.errors import OptimswapError
from optimswap.eval.metrics import high_frequency_ratio, identity_distance, psnr
from optimswap.face import Face, detect_faces, face_descriptor, find_face, warp_from_frame, warp_to_frame
from optimswap.io import read_image, to_tensor
from optimswap.io.image import json_file, write_files
from optimswap.pipeline import make_frame
from optimswap.registry import Scoring, edit_names, get_edit

COLUMNS = ["run", "edit", "method", "source", "target", "reference", "degree", "id_before", "id_after", "id_drop",
           "id_to_source", "retrieved", "nme", "d_yaw", "d_pitch", "d_roll", "psnr_outside", "lighting_error",
           "hf_ratio", *(f"{r}_{w}" for r in ("lips", "eyes", "skin") for w in ("before", "after")), "ring_ratio",
           "seconds", "evaluations", "peak_memory_mb", "error"]


def _match_face(image: np.ndarray, box: tuple) -> Face | None:
    """The face in ``image`` overlapping ``box`` most (IoU >= 0.3), or None."""
    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    scored = [(iou(f.box, box), f) for f in detect_faces(image)]
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    return best[1] if best[0] >= 0.3 else None


def _read_output(path: Path, record: dict) -> np.ndarray:
    output_path = Path(record["output"])
    if not output_path.exists():
        output_path = path.with_suffix(output_path.suffix)  # a moved folder: the picture sits beside its record
    return read_image(output_path)


def evaluate_record(path: Path, identities_root: Path | None = None) -> dict:
    """Metrics of one run. A face that cannot be found in the output is reported in ``error``, not raised.
    ``identities_root``: the person folders a swap's identity retrieval chooses among (default: the folders
    beside the run's target folder)."""
    path = Path(path)
    record = json.loads(path.read_text())
    edit = get_edit(record["edit"])
    cfg = edit.config.from_dict(record["options"])
    row: dict[str, Any] = {"run": str(path.with_suffix("")), "edit": edit.name, "source": record["source"],
                           "method": getattr(cfg, "method", None), "seconds": record["timings"]["total_s"],
                           "evaluations": record.get("evaluations", len(record["loss_history"])),
                           "peak_memory_mb": record.get("peak_memory_mb"), "error": ""}
    source, output = read_image(record["source"]), _read_output(path, record)
    if output.shape != source.shape:
        raise OptimswapError(f"output is {output.shape[1]}x{output.shape[0]} but the source is "
                             f"{source.shape[1]}x{source.shape[0]}")
    face = find_face(source, face_index=record.get("face_index", 0), name=record["source"])
    frame = make_frame(to_tensor(source), face, cfg, edit.mask)  # a CPU photo, so a CPU mask
    output_frame = warp_to_frame(to_tensor(output), frame.matrix, cfg.size)
    h, w = source.shape[:2]
    outside = warp_from_frame(frame.mask, frame.matrix, h, w)[0, 0].numpy() == 0  # never touched by the edit
    row["psnr_outside"] = psnr(output, source, outside)
    row["hf_ratio"] = high_frequency_ratio(output_frame, frame.image, frame.mask)
    output_face = _match_face(output, face.box)
    if output_face is None:
        row["error"] = "no face found in the output at the source face's place"
    else:
        row["id_to_source"] = identity_distance(face_descriptor(output, output_face), face_descriptor(source, face))
    if edit.score is not None:
        row.update(edit.score(Scoring(record, cfg, source, output, face, output_face, frame, output_frame,
                                      identities_root)))
    return row


def evaluate_runs(records: list[Path], identities_root: Path | None = None) -> list[dict]:
    """Rows for every record (see ``evaluate_record``); a run that cannot be scored gets a row with its error."""
    rows = []
    for path in records:
        try:
            rows.append(evaluate_record(path, identities_root))
        except (OptimswapError, KeyError, ValueError) as err:
            rows.append({"run": str(Path(path).with_suffix("")), "error": str(err)})
    return rows


def find_records(paths: list[Path]) -> list[Path]:
    """Run records among ``paths``: JSON files written by an edit, or found (recursively) under folders."""
    known = set(edit_names())
    found = []
    for p in map(Path, paths):
        candidates = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for c in candidates:
            try:
                if json.loads(c.read_text()).get("edit") in known:
                    found.append(c)
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                continue
    return found


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of ``rows`` (floats to 4 significant digits)."""
    columns = columns or [c for c in COLUMNS if any(r.get(c) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_rows(rows: list[dict], csv_path: Path, lead: list[str] | tuple[str, ...] = ()) -> None:
    """CSV and a JSON twin (same stem) of the rows: ``lead`` columns, then COLUMNS' order, then any others."""
    lead = list(lead)
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - set(lead))
    columns = lead + [c for c in COLUMNS if c not in lead and any(c in r for r in rows)] + extra
    csv_path = Path(csv_path)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows({c: r.get(c, "") for c in columns} for r in rows)

    write_files([(csv_path, write_csv), json_file(csv_path.with_suffix(".json"), rows)])


__all__ = ["COLUMNS", "evaluate_record", "evaluate_runs", "find_records", "format_table", "write_rows"]
