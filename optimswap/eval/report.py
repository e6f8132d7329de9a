"""Score finished runs from their records (OUT.json): one row of metrics per run, tables and CSV/JSON files."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import numpy as np

from optimswap.config import MAKEUP_REGIONS, SwapConfig
from optimswap.eval.metrics import (border_gradient, head_pose, high_frequency_ratio, histogram_distance,
                                    identity_distance, landmark_nme, lighting_error, nearest_identity, psnr)
from optimswap.face import detect_faces, face_descriptor, face_mask, find_face, frame_matrix, warp_from_frame, warp_to_frame
from optimswap.face.align import apply_matrix
from optimswap.face.regions import skin_mask
from optimswap.io import ImageError, read_image, to_tensor
from optimswap.losses import region_pixels
from optimswap.makeup import align_reference, editable_mask, region_masks
from optimswap.pipeline import make_frame
from optimswap.swap import list_images

COLUMNS = ["run", "command", "method", "source", "target", "reference", "degree", "id_before", "id_after", "id_drop",
           "id_to_source", "retrieved", "nme", "d_yaw", "d_pitch", "d_roll", "psnr_background", "lighting_error",
           "hf_ratio", *(f"{r}_{w}" for r in MAKEUP_REGIONS for w in ("before", "after")), "psnr_outside",
           "ring_ratio", "seconds", "evaluations", "peak_memory_mb", "error"]
EDITS = ("swap", "makeup")


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


def _base_row(path: Path, record: dict) -> dict:
    return {"run": str(path.with_suffix("")), "command": record["command"], "source": record["source"],
            "seconds": record["timings"]["total_s"], "evaluations": record.get("evaluations", len(record["loss_history"])),
            "peak_memory_mb": record.get("peak_memory_mb"), "error": ""}


def _read_output(path: Path, record: dict) -> np.ndarray:
    output_path = Path(record["output"])
    if not output_path.exists():
        output_path = path.with_suffix(output_path.suffix)  # a moved folder: the picture sits beside its record
    return read_image(output_path)


def evaluate_record(path: Path, identities_root: Path | None = None) -> dict:
    """Metrics of one run (swap or makeup). A face that cannot be found in the output is reported in ``error``,
    not raised. Swap retrieval candidates: the folders under ``identities_root``, by default the folders beside
    the run's target folder."""
    path = Path(path)
    record = json.loads(path.read_text())
    if record.get("command") == "makeup":
        return _evaluate_makeup(path, record)
    return _evaluate_swap(path, record, identities_root)


def _evaluate_swap(path: Path, record: dict, identities_root: Path | None) -> dict:
    cfg = SwapConfig.from_dict(record["options"])
    name, targets = target_photos(record)
    identities = identity_sets(identities_root or targets[0].parent.parent)
    row = {**_base_row(path, record), "method": cfg.method, "target": name}
    source = read_image(record["source"])
    output = _read_output(path, record)
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


def _evaluate_makeup(path: Path, record: dict) -> dict:
    """Per region: histogram distance (earth mover's, 0-255) to the reference, plain (before) and output (after);
    identity distance output <-> plain; PSNR outside all makeup regions; ring_ratio = mean gradient on a thin
    ring along the region borders, output over plain (hard edges > 1)."""
    cfg = SwapConfig.from_dict(record["options"])
    row = {**_base_row(path, record), "reference": record["reference"], "degree": cfg.makeup_degree}
    plain, output, reference = read_image(record["source"]), _read_output(path, record), read_image(record["reference"])
    plain_face = find_face(plain, face_index=record.get("face_index", 0), name=record["source"])
    frame = make_frame(to_tensor(plain), plain_face, cfg, editable_mask(cfg))
    ref_frame, inside = align_reference(reference, find_face(reference, name=record["reference"]), frame, cfg, "cpu")
    out_frame = warp_to_frame(to_tensor(output), frame.matrix, cfg.size)
    masks = region_masks(frame.landmarks, cfg.size, cfg, "cpu")
    for name, region in masks.items():
        ref_pixels = region_pixels(ref_frame, region, inside)
        row[f"{name}_before"] = histogram_distance(region_pixels(frame.image, region), ref_pixels)
        row[f"{name}_after"] = histogram_distance(region_pixels(out_frame, region), ref_pixels)
    editable = frame.mask  # the union of the regions (makeup.editable_mask)
    row["ring_ratio"] = border_gradient(out_frame, editable) / border_gradient(frame.image, editable)
    h, w = plain.shape[:2]
    outside = warp_from_frame((editable > 0).float(), frame.matrix, h, w)[0, 0].numpy() == 0
    row["psnr_outside"] = psnr(output, plain, outside)
    out_face = _match_face(output, plain_face.box)
    if out_face is None:
        row["error"] = "no face found in the output at the plain face's place"
        return row
    row["id_to_source"] = identity_distance(face_descriptor(output, out_face), face_descriptor(plain, plain_face))
    return row


def evaluate_runs(records: list[Path], identities_root: Path | None = None) -> list[dict]:
    """Rows for every record (see ``evaluate_record``); a run that cannot be scored gets a row with its error."""
    rows = []
    for path in records:
        try:
            rows.append(evaluate_record(path, identities_root))
        except (ImageError, KeyError, ValueError) as err:
            rows.append({"run": str(Path(path).with_suffix("")), "error": str(err)})
    return rows


def find_records(paths: list[Path]) -> list[Path]:
    """Run records among ``paths``: JSON files written by an edit (swap, makeup), or found (recursively) under folders."""
    found = []
    for p in map(Path, paths):
        candidates = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for c in candidates:
            try:
                if json.loads(c.read_text()).get("command") in EDITS:
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
