"""Score finished runs from their records (OUT.json): one row of metrics per run, tables and CSV/JSON files."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import numpy as np

from optimswap.config import SwapConfig
from optimswap.eval.metrics import (head_pose, high_frequency_ratio, identity_distance, landmark_nme, lighting_error,
                                    nearest_identity, psnr)
from optimswap.face import detect_faces, face_descriptor, face_mask, find_face, frame_matrix, warp_from_frame, warp_to_frame
from optimswap.face.align import apply_matrix
from optimswap.face.regions import skin_mask
from optimswap.io import ImageError, read_image, to_tensor
from optimswap.swap import list_images

COLUMNS = ["run", "method", "source", "target", "id_before", "id_after", "id_drop", "id_to_source", "retrieved",
           "nme", "d_yaw", "d_pitch", "d_roll", "psnr_background", "lighting_error", "hf_ratio", "seconds",
           "evaluations", "peak_memory_mb", "error"]


@functools.lru_cache(maxsize=None)
def photo_descriptor(path: str) -> np.ndarray | None:
    """dlib descriptor of the largest face in a photo, None when there is none (cached per path)."""
    image = read_image(path)
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


def target_photos(record: dict) -> tuple[str, list[Path]]:
    """(identity name, photos) of a record's target: its folder's name, or the common folder of its files."""
    target = record["target"]
    paths = list_images([Path(p) for p in target] if isinstance(target, list) else Path(target))
    return paths[0].parent.name, paths


def _match_face(image: np.ndarray, box: tuple) -> object:
    """The face in ``image`` overlapping ``box`` most (IoU >= 0.3), or None."""
    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    scored = [(iou(f.box, box), f) for f in detect_faces(image)]
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    return best[1] if best[0] >= 0.3 else None


def evaluate_record(path: Path, identities: dict[str, list[Path]] | None = None) -> dict:
    """Metrics of one run. A face that cannot be found in the output is reported in ``error``, not raised."""
    path = Path(path)
    record = json.loads(path.read_text())
    cfg = SwapConfig.from_dict(record["options"])
    name, targets = target_photos(record)
    row = {"run": str(path.with_suffix("")), "method": cfg.method, "source": record["source"], "target": name,
           "seconds": record["timings"]["total_s"], "evaluations": record.get("evaluations", len(record["loss_history"])),
           "peak_memory_mb": record.get("peak_memory_mb"), "error": ""}
    source = read_image(record["source"])
    output_path = Path(record["output"])
    if not output_path.exists():
        output_path = path.with_suffix(output_path.suffix)  # a moved folder: the picture sits beside its record
    output = read_image(output_path)
    source_face = find_face(source, face_index=record.get("face_index", 0), name=record["source"])
    target_mean = identity_mean(targets)
    source_descriptor = face_descriptor(source, source_face)
    row["id_before"] = identity_distance(source_descriptor, target_mean)

    # Background: everything outside the face mask the edit was allowed to touch.
    h, w = source.shape[:2]
    matrix = frame_matrix(source_face.landmarks, cfg.size, cfg.frame_scale)
    landmarks = apply_matrix(matrix, source_face.landmarks)
    mask = face_mask(landmarks, cfg.size, cfg.forehead, cfg.feather)
    outside = warp_from_frame(mask, matrix, h, w)[0, 0].numpy() == 0
    row["psnr_background"] = psnr(output, source, outside)

    # Lighting and artefacts on the face, in the source's aligned frame (output and source are pixel-aligned).
    src_frame = warp_to_frame(to_tensor(source), matrix, cfg.size)
    out_frame = warp_to_frame(to_tensor(output), matrix, cfg.size)
    skin = skin_mask(landmarks, cfg.size, cfg.forehead, cfg.feather)
    row["lighting_error"] = lighting_error(out_frame, src_frame, skin, landmarks)
    row["hf_ratio"] = high_frequency_ratio(out_frame, src_frame, mask)

    out_face = _match_face(output, source_face.box)
    if out_face is None:
        row["error"] = "no face found in the output at the source face's place"
        return row
    descriptor = face_descriptor(output, out_face)
    row["id_after"] = identity_distance(descriptor, target_mean)
    row["id_drop"] = row["id_before"] - row["id_after"]
    row["id_to_source"] = identity_distance(descriptor, source_descriptor)
    if identities:
        means = {k: identity_mean(v) for k, v in identities.items()}
        means.setdefault(name, target_mean)
        row["retrieved"] = nearest_identity(descriptor, means) == name
    row["nme"] = landmark_nme(out_face.landmarks, source_face.landmarks)
    row["d_yaw"], row["d_pitch"], row["d_roll"] = (head_pose(out_face.landmarks) - head_pose(source_face.landmarks)).tolist()
    return row


def evaluate_runs(records: list[Path], identities_root: Path | None = None) -> list[dict]:
    """Rows for every record. Retrieval candidates: the folders under ``identities_root``, by default the
    folders beside each run's target folder. A run that cannot be scored gets a row with its error."""
    rows = []
    for path in records:
        try:
            record = json.loads(Path(path).read_text())
            _, targets = target_photos(record)
            root = identities_root or targets[0].parent.parent
            rows.append(evaluate_record(path, identity_sets(root)))
        except (ImageError, KeyError, ValueError) as err:
            rows.append({"run": str(Path(path).with_suffix("")), "error": str(err)})
    return rows


def find_records(paths: list[Path]) -> list[Path]:
    """Run records among ``paths``: JSON files written by a swap, or found (recursively) under folders."""
    found = []
    for p in map(Path, paths):
        candidates = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for c in candidates:
            try:
                if json.loads(c.read_text()).get("command") == "swap":
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


def write_rows(rows: list[dict], csv_path: Path, lead: list[str] = ()) -> None:
    """CSV and a JSON twin (same stem) of the rows: ``lead`` columns, then COLUMNS' order, then any others."""
    lead = list(lead)
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - set(lead))
    columns = lead + [c for c in COLUMNS if c not in lead and any(c in r for r in rows)] + extra
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({c: r.get(c, "") for c in columns} for r in rows)
    csv_path.with_suffix(".json").write_text(json.dumps(rows, indent=2, default=float))


__all__ = ["COLUMNS", "evaluate_record", "evaluate_runs", "find_records", "format_table", "identity_sets", "write_rows"]
