"""Score finished runs from their records (OUT.json): one row of metrics per run, tables and CSV/JSON files.

The rows share the metrics every edit has (background kept, face detail, identity to the source, cost); the
edit named in the record adds its own (``Edit.score``).
"""

from __future__ import annotations

import csv
import json
import math
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from optimswap.config import EditConfig
from optimswap.errors import OptimswapError, OptionError
from optimswap.eval.metrics import high_frequency_ratio, identity_distance, psnr
from optimswap.eval.video import evaluate_clip, is_clip_record
from optimswap.face import face_at, face_descriptor, find_face, warp_from_frame, warp_to_frame
from optimswap.io import IMAGE_SUFFIXES, read_image, to_tensor
from optimswap.io.image import LOSSLESS_FORMATS, image_format, is_temp, json_file, save_options, write_files
from optimswap.pipeline import make_frame
from optimswap.registry import Edit, Scoring, edit_names, get_edit

COLUMNS = ["run", "edit", "method", "source", "target", "reference", "degree", "frames", "skipped", "cuts",
           "id_before", "id_after", "id_drop", "verified", "id_to_source", "retrieved", "nme", "flicker",
           "source_change", "d_yaw", "d_pitch", "d_roll", "psnr_outside", "psnr_outside_resaved", "outside_changed",
           "passed_exact", "lighting_error", "tone", "hf_ratio",
           *(f"{r}_{w}" for r in ("lips", "eyes", "skin") for w in ("before", "after")), "ring_ratio",
           "first_frame_s", "rest_frame_s", "seconds", "evaluations", "recoveries", "peak_memory_mb", "note", "error"]


JSON_KINDS = {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}


def _kind(value: Any) -> str:
    """A JSON value's kind, for messages."""
    return "null" if value is None else JSON_KINDS.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_record(path: Path) -> Any:
    """A run record's JSON; OptimswapError naming the file when it cannot be read or parsed (e.g. truncated)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise OptimswapError(f"{path}: not a readable run record ({err})") from None


def check_record(path: Path, record: Any) -> tuple[Edit, EditConfig]:
    """The record's edit and options, after checking the shape of every field eval reads (files are read later);
    OptimswapError "RECORD: field 'NAME': reason" at the first bad one."""
    def bad(name: str, reason: str) -> OptimswapError:
        return OptimswapError(f"{path}: field '{name}': {reason}")

    if not isinstance(record, dict):
        raise OptimswapError(f"{path}: not a run record (the JSON is {_kind(record)}, not an object)")
    if record.get("edit") not in edit_names():
        raise bad("edit", f"unknown edit {record.get('edit')!r}; known: {', '.join(edit_names())}")
    edit = get_edit(record["edit"])
    if not isinstance(record.get("options"), dict):
        raise bad("options", f"expected an object of option values, got {_kind(record.get('options'))}")
    try:
        cfg = edit.config.from_dict(record["options"])
    except OptionError as err:
        raise bad(f"options.{err.option}", err.reason) from None
    for name in ("source", "output"):
        if not isinstance(record.get(name), str):
            raise bad(name, f"expected a picture's path, got {_kind(record.get(name))}")
    timings = record.get("timings")
    if not isinstance(timings, dict):
        raise bad("timings", f"expected an object of timings, got {_kind(timings)}")
    if not _is_number(timings.get("total_s")):
        raise bad("timings.total_s", f"expected a number of seconds, got {timings.get('total_s')!r}")
    # recoveries: not in records older than the solver's fault checks
    for name, value in (("loss_history", record.get("loss_history")), ("recoveries", record.get("recoveries", []))):
        if not isinstance(value, list):
            raise bad(name, f"expected a list, got {_kind(value)}")
    optional = {"face_index": (_is_count, "a face number >= 0"), "evaluations": (_is_count, "a count"),
                "peak_memory_mb": (lambda v: v is None or _is_number(v), "a number or null")}
    for name, (ok, expected) in optional.items():
        if name in record and not ok(record[name]):
            raise bad(name, f"expected {expected}, got {record[name]!r}")
    inputs = record.get("inputs")
    if not isinstance(inputs, dict):
        raise bad("inputs", f"expected an object of {edit.name}'s inputs, got {_kind(inputs)}")
    for spec in edit.inputs:  # read deep inside the edit's scoring, so checked here to name the field
        photos, name = inputs.get(spec.name), f"inputs.{spec.name}"
        if spec.kind == "photo":
            photos = [photos]
        elif not (isinstance(photos, list) and photos):
            raise bad(name, f"expected a list of photo paths, got {_kind(photos)}")
        for photo in photos:
            if not isinstance(photo, str):
                raise bad(name, f"expected a photo's path, got {_kind(photo)}")
            if not Path(photo).is_file():
                raise bad(name, f"{photo}: no such file")
    return edit, cfg


def _output_picture(path: Path, record: dict) -> tuple[Path, str]:
    """The picture a record scores: the one beside it (OUT.json's OUT picture, with the recorded picture's
    extension), else, for a record kept apart from its picture, the recorded path; and a note when that is not the
    recorded path (a copied or moved run folder)."""
    recorded = Path(record["output"])
    beside = path.with_suffix(recorded.suffix)
    if not beside.is_file():
        return recorded, ""
    if recorded.exists() and beside.resolve() == recorded.resolve():
        return beside, ""
    return beside, f"scored {beside.name} beside the record; the record names {recorded}"


def _read_picture(path: Path, record: dict, name: str, picture: Path | None = None) -> np.ndarray:
    """The record's source or output picture (``picture``: where the output is read)."""
    try:
        return read_image(picture or Path(record[name]))
    except OptimswapError as err:
        raise OptimswapError(f"{path}: field '{name}': {err}") from None


def _resaved(source: np.ndarray, output: Path, source_path: str) -> np.ndarray:
    """``source`` written and read back as the output picture was written (its format, a JPEG with the source's
    settings): what the format alone does to the photo."""
    buffer = BytesIO()
    Image.fromarray(source).save(buffer, **save_options(output, source_path if Path(source_path).is_file() else None))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def evaluate_record(path: Path, identities_root: Path | None = None) -> dict:
    """Metrics of one run. A face that cannot be found in the output is reported in ``error``, not raised; a
    malformed record or a missing or mismatched picture raises OptimswapError naming the record and the field.
    ``identities_root``: the person folders a swap's identity retrieval chooses among (default: the folders
    beside the run's target folder)."""
    path = Path(path)
    record = load_record(path)
    if is_clip_record(record):
        return evaluate_clip(path, record)
    edit, cfg = check_record(path, record)
    row: dict[str, Any] = {"run": str(path.with_suffix("")), "edit": edit.name, "source": record["source"],
                           "method": getattr(cfg, "method", None), "seconds": record["timings"]["total_s"],
                           "evaluations": record.get("evaluations", len(record["loss_history"])),
                           "recoveries": len(record.get("recoveries", [])),
                           "peak_memory_mb": record.get("peak_memory_mb"), "error": ""}
    picture, row["note"] = _output_picture(path, record)
    source, output = _read_picture(path, record, "source"), _read_picture(path, record, "output", picture)
    if output.shape != source.shape:
        raise OptimswapError(f"{path}: field 'output': the picture is {output.shape[1]}x{output.shape[0]} but the "
                             f"source is {source.shape[1]}x{source.shape[0]}")
    try:
        face_index = record.get("face_index", 0)
        face = find_face(source, face_index=face_index, name=record["source"])
        # A MediaPipe run is scored in the frame and regions its mesh gave it; NME and the output's face stay dlib's.
        edit_face = (find_face(source, "mediapipe", face_index, record["source"]) if cfg.landmarks == "mediapipe"
                     else face)
    except OptimswapError as err:
        raise OptimswapError(f"{path}: field 'source': {err}") from None
    frame = make_frame(to_tensor(source), edit_face, cfg, edit.mask)  # a CPU photo, so a CPU mask
    output_frame = warp_to_frame(to_tensor(output), frame.matrix, cfg.size)
    h, w = source.shape[:2]
    outside = warp_from_frame(frame.mask, frame.matrix, h, w)[0, 0].numpy() == 0  # never touched by the edit
    if outside.any():  # an edit of the whole photo (the stylized portrait) leaves nothing outside
        row["psnr_outside"] = psnr(output, source, outside)
        if image_format(picture) not in LOSSLESS_FORMATS:  # the format's own share of the change outside the face
            row["psnr_outside_resaved"] = psnr(_resaved(source, picture, record["source"]), source, outside)
    row["hf_ratio"] = high_frequency_ratio(output_frame, frame.image, frame.mask)
    output_face = face_at(output, face.box)
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
        except (OptimswapError, ValueError) as err:  # ValueError: a metric with nothing to compare
            rows.append({"run": str(Path(path).with_suffix("")), "error": str(err)})
    return rows


def _is_record(path: Path, named: bool) -> bool:
    """A JSON file an edit wrote (it says so), or a damaged one that is meant as a record: named by the user, or
    OUT.json beside its OUT picture."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: bad JSON or not UTF-8
        return path.suffix == ".json" and (named or any(path.with_suffix(s).is_file() for s in IMAGE_SUFFIXES))
    return isinstance(data, dict) and ("optimswap" in data or data.get("edit") in edit_names())


def find_records(paths: list[Path]) -> list[Path]:
    """Run records among ``paths`` (files, or folders searched recursively): JSON files written by an edit; and,
    so that eval reports them rather than skipping them, damaged ones named by the user or beside their picture."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [c for c in sorted(p.rglob("*.json")) if not is_temp(c) and _is_record(c, named=False)]
        elif _is_record(p, named=True):
            found.append(p)
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


__all__ = ["COLUMNS", "check_record", "evaluate_record", "evaluate_runs", "find_records", "format_table", "load_record",
           "write_rows"]
