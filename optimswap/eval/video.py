"""Score a clip run (``optimswap swap-video``'s record): identity and landmarks on sampled frames, flicker over every
pair of consecutive edited frames, and what was left unchanged.

- identity: the dlib descriptor of the output's face (found at the source face's place) against the mean of the
  target photos, on ``SAMPLES`` frames spread over the edited ones; ``verified`` is the share below 0.6, dlib's
  same-person threshold;
- nme: the output's landmarks against the source frame's (both dlib), on the same frames;
- flicker: the output face region's frame-to-frame change beyond the source's own, after the source's motion
  (``metrics.flicker``), over consecutive edited frames of one shot; ``source_change`` is the source's own;
- outside_changed: pixels outside the editable region of each edited frame that differ from the source, and
  passed_exact: the frames passed through that equal the source (both exact only for a folder of PNG frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optimswap.errors import OptimswapError
from optimswap.eval.identity import identity_mean
from optimswap.eval.metrics import flicker, identity_distance, landmark_nme
from optimswap.face import Face, face_at, face_descriptor, warp_from_frame
from optimswap.io import to_tensor
from optimswap.io.video import open_clip, read_frames
from optimswap.pipeline import make_frame
from optimswap.registry import get_edit

SAMPLES = 12  # frames per clip scored for identity and landmarks (a dlib descriptor each)
SAME_PERSON = 0.6  # dlib's threshold


def is_clip_record(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("video"), dict)


def _box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def evaluate_clip(path: Path, record: dict) -> dict:
    """The row of one clip run (see the module's description); OptimswapError naming the record for a missing or
    mismatched clip."""
    edit = get_edit(record.get("edit", ""))
    try:
        cfg = edit.config.from_dict(record["options"])
        rows, targets = record["frame_rows"], [Path(p) for p in record["inputs"]["target"]]
        source_clip = open_clip(record["source"])
        output = Path(record["output"])
        output_clip = open_clip(output if output.exists() else path.with_name(output.name))
    except (KeyError, TypeError) as err:
        raise OptimswapError(f"{path}: not a clip record (field {err})") from None
    except OptimswapError as err:
        raise OptimswapError(f"{path}: {err}") from None
    if (output_clip.frames, output_clip.width, output_clip.height) != (source_clip.frames, source_clip.width,
                                                                      source_clip.height):
        raise OptimswapError(f"{path}: the output has {output_clip.frames} frames of {output_clip.width}x"
                             f"{output_clip.height}, the source {source_clip.frames} of {source_clip.width}x"
                             f"{source_clip.height}")
    edited = [r["frame"] for r in rows if r["status"] == "edited"]
    sampled = {edited[int(k)] for k in np.linspace(0, len(edited) - 1, min(SAMPLES, len(edited)))} if edited else set()
    by_frame = {r["frame"]: r for r in rows}
    target_mean = identity_mean(targets)
    identities, nmes, flickers, source_changes, outside, exact = [], [], [], [], 0, []
    before: tuple[np.ndarray, np.ndarray] | None = None
    for i, (source, out) in enumerate(zip(read_frames(source_clip), read_frames(output_clip), strict=True)):
        row = by_frame[i]
        if row["status"] != "edited":
            exact.append(bool(np.array_equal(source, out)))
            before = None
            continue
        points = np.asarray(row["landmarks"])
        frame = make_frame(to_tensor(source), Face(_box(points), points), cfg, edit.mask)
        reach = warp_from_frame(frame.mask, frame.matrix, *source.shape[:2])[0, 0].numpy()
        outside += int((source != out).any(2)[reach == 0].sum())
        if before is not None and not row["cut"]:
            excess, own = flicker(before[0], source, before[1], out, reach > 0.5)
            flickers.append(excess)
            source_changes.append(own)
        before = (source, out)
        if i in sampled:
            source_face = face_at(source, _box(points))
            output_face = face_at(out, _box(points))
            if output_face is not None:
                identities.append(identity_distance(face_descriptor(out, output_face), target_mean))
                if source_face is not None:
                    nmes.append(landmark_nme(output_face.landmarks, source_face.landmarks))
    first, rest = record["timings"].get("first_frame_s"), record["timings"].get("rest_frame_s")
    return {
        "run": str(path.with_suffix("")), "edit": f"{edit.name} (clip)", "method": getattr(cfg, "method", None),
        "source": record["source"], "target": targets[0].parent.name, "frames": len(rows),
        "skipped": len(rows) - len(edited), "cuts": len(record.get("cuts", [])),
        "id_after": float(np.mean(identities)) if identities else None,
        "verified": float(np.mean([d < SAME_PERSON for d in identities])) if identities else None,
        "sampled": len(sampled), "faces_found": len(identities),
        "nme": float(np.mean(nmes)) if nmes else None,
        "flicker": float(np.mean(flickers)) if flickers else None,
        "source_change": float(np.mean(source_changes)) if source_changes else None,
        "outside_changed": outside, "passed_exact": f"{sum(exact)}/{len(exact)}",
        "first_frame_s": first, "rest_frame_s": rest, "seconds": record["timings"].get("total_s"),
        "error": "" if len(identities) == len(sampled) else
        f"no face found in {len(sampled) - len(identities)} of {len(sampled)} sampled output frames",
    }
