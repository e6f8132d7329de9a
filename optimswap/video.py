"""An edit run through a clip, frame by frame on the one pipeline, with its state carried from frame to frame.

Before any frame is edited the whole clip is read once: faces are found and tracked (the face overlapping the one
before), frames whose face is missing, too small or turned away are marked to pass through unchanged, shot cuts are
found from the colour histograms of consecutive frames, and the landmarks are smoothed over time within each shot
along the source's optical flow (a non-causal Gaussian over the neighbours' landmarks carried to the frame: no lag
on a fast or jerky movement, no jitter of the frame, the mask or the warp).

Then each frame goes through the edit as a still would (``registry.run_on_face``), except that
- what the edit prepares from its inputs is prepared once per clip (``Setup.clip``: a swap's target photos, their
  features);
- every frame runs ``frame_iters`` iterations at the finest level; the first of a shot starts from its own start,
  every later one from the previous frame's change to its start carried to this frame's landmarks (a thin-plate
  spline) and added to its own start (``Plan.init``), and a temporal term keeps it there where the source itself did
  not change once its landmark motion is taken out (Ruder et al. 2016's warm start and temporal loss, with the
  landmark warp as the motion and the source's own change as the occlusion mask);
- the delivered frame is steadied (``steadied``): its face's change over the source is averaged with the frame
  before's, carried along the source's optical flow, where the source did not change; the finish steps after the
  optimization (colour, detail) are re-decided per frame and the temporal term does not see them.

Every finished frame lands in a cache beside the output (``OUT.resume/``) with what the next frame needs, so that an
interrupted run resumes where it stopped and gives the frames an uninterrupted one gives; the output and its record
(``OUT.json``) are written once, at the end, and the cache removed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from optimswap import __version__
from optimswap.compose import gaussian_blur
from optimswap.config import EditConfig, check_fields, option
from optimswap.errors import ImageError, OptionError
from optimswap.eval.metrics import head_pose
from optimswap.face import Face, detect_faces, interocular, tps_warp, warp_from_frame, warp_to_frame
from optimswap.face.detect import box_iou
from optimswap.io.image import check_outputs, image_file, json_file, read_image, to_tensor, write_files
from optimswap.io.video import (
    Clip,
    check_clip_output,
    frame_file_names,
    is_frame_folder_output,
    open_clip,
    read_frames,
    write_video,
)
from optimswap.losses import ContentLoss
from optimswap.objective import Objective, Term
from optimswap.optim import resize_to
from optimswap.pipeline import Frame, Level, Plan, make_frame, resolve_device
from optimswap.registry import Edit, Photo, Setup, describe_inputs, get_edit, load_inputs, run_on_face
from optimswap.runs import record_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoConfig:
    """How a clip is carried through: tracking, cuts, skipped faces, warm start, temporal term, the written video."""

    # A warm-started frame is already close; see run_clip for why the first frame of a shot is not run as deep as a
    # still.
    frame_iters: int = option(5, "Optimizer iterations of every frame (finest level only).", low=1, high=10_000)
    carry_over: bool = option(True, "Start each frame from the previous frame's result carried to its landmarks, "
                                    "held by the temporal term, and steady the delivered face (off: every frame "
                                    "from its own start).")
    temporal_weight: float = option(10_000.0, "Weight of the temporal term (the face kept as the previous frame's, "
                                          "carried, where the source did not change; 0 = off).", low=0)
    temporal_tolerance: float = option(0.04, "Change of the source (0-1 grey levels, after the landmark motion) "
                                             "at which the temporal term has let go to 37 %.", low=0, above=True)
    # The optimization's patches, the detail match and the start's colour are re-decided in every frame; what the
    # temporal term above does not see (all but the optimization) is held here, on the delivered face itself.
    steady: float = option(0.8, "Share of the previous frame's delivered face (its change over the source, carried "
                                "along the source's optical flow) kept where the source did not change (0 = off).",
                           low=0, high=0.95)
    carry_sigma: float = option(2.0, "Blur (frame pixels) of the change carried from frame to frame (0 = none).",
                                low=0, high=16)
    landmark_smoothing: float = option(1.0, "Smoothing of the landmarks over time, along the source's optical "
                                            "flow: Gaussian sigma in frames (0 = each frame's own).", low=0, high=25)
    cut_threshold: float = option(0.3, "Colour-histogram distance (Bhattacharyya, 0-1) between consecutive frames "
                                       "that marks a shot cut.", low=0, high=1, above=True)
    min_eye_distance: float = option(20.0, "Faces with eyes closer than this (pixels) pass through unchanged.",
                                     low=0)
    max_yaw: float = option(50.0, "Faces turned further than this (degrees, from the landmarks) pass through "
                                  "unchanged.", low=0, high=90, above=True)
    fps: float = option(25.0, "Frame rate of a video written from a folder of frames.", low=0, above=True)
    crf: int = option(18, "Quality of the written H.264 video (0 = lossless, 18 = visually lossless, 23 = x264's "
                          "default).", low=0, high=51)

    def __post_init__(self) -> None:
        check_fields(self)


RESUMABLE = ("crf", "fps")  # options that only change the final writing: a cache made with others still serves


@dataclass
class Track:
    """The clip read once: per frame the tracked face (None: passed through, ``reasons`` says why), the
    histogram distance to the frame before, the cuts, the source's motion at the landmarks, the smoothed
    landmarks."""

    faces: list[Face | None]
    reasons: list[str | None]
    distances: list[float]  # frame i against frame i - 1 (0 for the first)
    cuts: list[int]  # frames that begin a new shot (the first frame is not listed)
    # Frame i against frame i - 1 when both have a face (else None): (2, 68, 2), the offsets by which frame i - 1's
    # landmarks moved into frame i and frame i's came from frame i - 1 (``landmark_motion``).
    motion: list[np.ndarray | None] = field(default_factory=list)
    landmarks: list[np.ndarray | None] = field(default_factory=list)  # smoothed, for the frames with a face

    def to_json(self) -> dict:
        return {"faces": [None if f is None else {"box": list(f.box), "landmarks": f.landmarks.tolist()}
                          for f in self.faces],
                "reasons": self.reasons, "distances": self.distances, "cuts": self.cuts,
                "motion": [None if m is None else m.tolist() for m in self.motion]}

    @classmethod
    def from_json(cls, data: dict) -> Track:
        faces = [None if f is None else Face(tuple(f["box"]), np.asarray(f["landmarks"])) for f in data["faces"]]
        motion = [None if m is None else np.asarray(m) for m in data["motion"]]
        return cls(faces, data["reasons"], data["distances"], data["cuts"], motion)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance (0 = same, 1 = disjoint) between the hue-saturation histograms of two RGB frames
    (read at most 128 px wide): a shot cut changes what is seen, a moving head or lips hardly the histogram."""
    def histogram(image: np.ndarray) -> np.ndarray:
        scale = min(1.0, 128 / image.shape[1])
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        hsv = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
        return cv2.normalize(hist, hist, 1, 0, cv2.NORM_L1)

    return float(cv2.compareHist(histogram(a), histogram(b), cv2.HISTCMP_BHATTACHARYYA))


def smooth_landmarks(points: np.ndarray, forward: np.ndarray, backward: np.ndarray, sigma: float) -> np.ndarray:
    """(T, N, 2) landmarks of one shot smoothed over time along the source's motion: each frame's are the Gaussian
    mean (``sigma`` frames, cut at 3 sigma and at the shot's ends) of its own and its neighbours' landmarks carried
    to it, step by step, by ``forward[t]`` (how frame t - 1's landmarks moved into frame t) and ``backward[t]`` (how
    frame t's came from frame t - 1), both (T, N, 2) with row 0 unused. A Gaussian over the landmarks themselves
    lags a fast movement by about sigma^2 times its acceleration: on a head shaken in steps (a clip with repeated
    frames) the smoothed eyes fell 5-14 px from the detected ones, and the swapped eyes with them."""
    if sigma <= 0 or len(points) < 2:
        return points
    reach = int(np.ceil(3 * sigma))
    smoothed = np.empty_like(points)
    for t in range(len(points)):
        total, weights = np.zeros_like(points[t]), 0.0
        for j in range(max(0, t - reach), min(len(points), t + reach + 1)):
            steps = forward[j + 1:t + 1].sum(0) if j < t else backward[t + 1:j + 1].sum(0)
            weight = float(np.exp(-0.5 * ((j - t) / sigma) ** 2))
            total += weight * (points[j] + steps)
            weights += weight
        smoothed[t] = total / weights
    return smoothed


def landmark_motion(image: np.ndarray, before: np.ndarray, face: Face, face_before: Face) -> np.ndarray:
    """(2, 68, 2): the offsets by which ``face_before``'s landmarks (in ``before``) moved into ``image`` and by which
    ``face``'s (in ``image``) came from ``before``: the source's optical flow (``source_flow``) both ways, read at
    the landmarks, over the two faces' boxes and half a box around them."""
    height, width = image.shape[:2]
    (x0, y0), (x1, y1) = (np.minimum(face.box[:2], face_before.box[:2]), np.maximum(face.box[2:], face_before.box[2:]))
    margin = 0.5 * max(x1 - x0, y1 - y0)
    rows = slice(int(max(0, y0 - margin)), int(min(height, y1 + margin + 1)))
    columns = slice(int(max(0, x0 - margin)), int(min(width, x1 + margin + 1)))
    corner = np.array([columns.start, rows.start], np.float32)

    def at(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
        xy = (points - corner).astype(np.float32)
        return np.stack([cv2.remap(flow[..., c], xy[:, :1], xy[:, 1:], cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)[:, 0] for c in range(2)], -1)

    crop, crop_before = image[rows, columns], before[rows, columns]
    return np.stack([at(source_flow(crop_before, crop), face_before.landmarks),
                     at(source_flow(crop, crop_before), face.landmarks)])


def track_faces(frames, video: VideoConfig, landmarks: str = "dlib", face_index: int = 0,
                progress: bool = False, total: int | None = None) -> Track:
    """Find and track the face through ``frames`` (an iterable of RGB frames): the one overlapping the face before
    it most (``face_index`` in the first frame of a shot or after a frame without one), marked to pass through when
    missing, small or turned away; cuts and smoothed landmarks as ``Track`` says."""
    faces: list[Face | None] = []
    reasons: list[str | None] = []
    distances: list[float] = []
    cuts: list[int] = []
    motion: list[np.ndarray | None] = []
    previous_image = None
    for i, image in enumerate(tqdm(frames, total=total, desc="tracking", unit="frame", disable=not progress)):
        distances.append(0.0 if previous_image is None else histogram_distance(previous_image, image))
        if i and distances[-1] > video.cut_threshold:
            cuts.append(i)
        found = detect_faces(image, landmarks)
        before = faces[-1] if faces and (not cuts or cuts[-1] != i) else None
        face = None
        if before is not None and found:
            best = max(found, key=lambda f: box_iou(f.box, before.box))
            face = best if box_iou(best.box, before.box) > 0.3 else None
        if face is None and len(found) > face_index:
            face = found[face_index]
        reason = None
        if face is None:
            reason = "no face" if not found else f"face {face_index} not found"
        elif interocular(face.landmarks) < video.min_eye_distance:
            reason = f"face too small (eyes {interocular(face.landmarks):.0f} px apart)"
        elif abs(head_pose(face.landmarks)[0]) > video.max_yaw:
            reason = f"face turned away (yaw {head_pose(face.landmarks)[0]:.0f} degrees)"
        faces.append(face if reason is None else None)
        reasons.append(reason)
        tracked = i > 0 and faces[-1] is not None and faces[-2] is not None and cuts[-1:] != [i]
        motion.append(landmark_motion(image, previous_image, faces[-1], faces[-2]) if tracked else None)  # type: ignore
        previous_image = image
    track = Track(faces, reasons, distances, cuts, motion)
    smooth_track(track, video.landmark_smoothing)
    return track


def shots(track: Track) -> list[range]:
    """Runs of consecutive frames with a face and no cut inside: the landmarks are smoothed and the state carried
    within one only."""
    runs: list[range] = []
    start = None
    for i, face in enumerate([*track.faces, None]):
        if start is not None and (face is None or i in track.cuts):
            runs.append(range(start, i))
            start = None
        if face is not None and start is None:
            start = i
    return runs


def smooth_track(track: Track, sigma: float) -> None:
    """Fill ``track.landmarks``: each shot's landmarks smoothed over time."""
    track.landmarks = [None] * len(track.faces)
    for run in shots(track):
        points = np.stack([track.faces[i].landmarks for i in run])  # type: ignore[union-attr]
        steps = [np.zeros((2, *points.shape[1:])), *(track.motion[i] for i in run[1:])]  # within a shot: never None
        moved = np.stack(steps)  # type: ignore[arg-type]
        for i, smoothed in zip(run, smooth_landmarks(points, moved[:, 0], moved[:, 1], sigma), strict=True):
            track.landmarks[i] = smoothed


@dataclass
class Delivered:
    """A delivered frame's face (``steadied``): its change over the source (0-255 grey levels) on the box of its
    editable mask, 0 elsewhere."""

    change: np.ndarray  # (h, w, 3) float32
    corner: tuple[int, int]  # the box's top left (row, column) in the photo


@dataclass
class Carried:
    """What the next frame starts from, in this frame's aligned frame: the optimization's change to this frame's start
    (its result less its start), the landmarks and the source's image; and the delivered face (``steadied``)."""

    index: int
    change: torch.Tensor  # (1, 3, S, S)
    landmarks: np.ndarray  # (68, 2) frame pixels
    source: torch.Tensor  # (1, 3, S, S)
    delivered: Delivered | None = None


def frame_start(plan: Plan, frame: Frame) -> torch.Tensor:
    """The image the plan's optimization starts from in ``frame`` (its start warped in, or the frame itself)."""
    return frame.image if plan.start is None else warp_to_frame(plan.start, frame.matrix, frame.size)


def unchanged_weight(source: torch.Tensor, carried_source: torch.Tensor, tolerance: float,
                     sigma: float = 1.0) -> torch.Tensor:
    """(1, 1, S, S) in [0, 1]: 1 where the source equals the previous source carried by the landmark motion, falling
    as exp(-(change / tolerance)^2) where it changed (blinks, lips, lighting, what the warp does not model); the
    change is read through a blur of ``sigma`` pixels (about one working-frame pixel)."""
    change = gaussian_blur((source - carried_source).abs().mean(1, keepdim=True), sigma)
    return torch.exp(-((change / tolerance) ** 2))


def warm_start(plan: Plan, frame: Frame, start: torch.Tensor, before: Carried, video: VideoConfig) -> Plan:
    """``plan`` (starting from ``start`` in ``frame``) starting from ``before``'s change carried to ``frame``'s
    landmarks and added to this frame's start, where the source moved as the landmarks say (elsewhere from its own
    start: the ear beside the jaw, a blink), and held there by the temporal term. The change, not the image, is
    carried: the start follows the source's geometry and detail in every frame, and the carried image does not
    soften from one resampling to the next."""
    moved = tps_warp(torch.cat([before.change, before.source]), np.stack([before.landmarks] * 2), frame.landmarks)
    change, carried_source = moved[:1], moved[1:]
    if video.carry_sigma:
        change = gaussian_blur(change, video.carry_sigma, "replicate")
    weight = unchanged_weight(frame.image, carried_source, video.temporal_tolerance)
    init = start + weight * change
    if plan.objective is None or not video.temporal_weight:
        return dataclasses.replace(plan, init=init)
    build, carried = plan.objective, start + change

    def with_temporal(level: Level) -> Objective:
        objective = build(level)
        temporal = ContentLoss(resize_to(carried, level.size), resize_to(weight, level.size))
        return Objective(objective.encoder, [*objective.terms, Term("temporal", video.temporal_weight, temporal,
                                                                    None)])

    return dataclasses.replace(plan, init=init, objective=with_temporal)


def source_flow(image: np.ndarray, before: np.ndarray) -> np.ndarray:
    """(H, W, 2) where each pixel of the RGB ``image`` was in ``before`` (x, y offsets; OpenCV's DIS optical flow)."""
    grey, grey_before = (cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY) for x in (image, before))
    flow = np.zeros((*grey.shape, 2), np.float32)
    return np.asarray(cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(grey, grey_before, flow))


def steadied(result: Any, source: np.ndarray, source_before: np.ndarray | None, before: Delivered | None,
             video: VideoConfig) -> tuple[np.ndarray, Delivered]:
    """The edited frame (``result.image``, of the frame ``source``) whose face's change over the source is, by the
    share ``video.steady``, the previous delivered frame's (``before``, of ``source_before``) carried along the
    source's optical flow, where the source did not change beyond that motion (``unchanged_weight``); and what the
    next frame needs. Only pixels inside the editable mask change.

    The delivered face is an exponential average along the motion: a change re-decided in each frame (which patches
    the optimization picks, the detail match's sharpening, the start's colour) is averaged over about
    1 / (1 - steady) frames, while the source's own change (lips, blinks) comes through at once. The motion is the
    source's dense flow, not the landmarks' spline: 68 smoothed points do not follow the skin between them (talk_green,
    20 frames: flicker 0.61 -> 0.49 carried by the landmarks, 0.35 by the flow)."""
    frame, image = result.frame, result.image
    reach = warp_from_frame(frame.mask.cpu(), frame.matrix, *image.shape[:2])[0, 0].numpy()
    ys, xs = np.nonzero(reach > 0)
    if not len(ys):
        return image, Delivered(np.zeros((0, 0, 3), np.float32), (0, 0))
    rows, columns = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    photo, now = source[rows, columns].astype(np.float32), image[rows, columns].astype(np.float32)
    change = now - photo
    if before is not None and source_before is not None:
        previous = np.zeros((*source.shape[:2], 3), np.float32)  # the change is 0 outside its editable mask
        (y0, x0), (h, w) = before.corner, before.change.shape[:2]
        previous[y0:y0 + h, x0:x0 + w] = before.change
        flow = source_flow(source[rows, columns], source_before[rows, columns])
        grid = np.stack(np.meshgrid(np.arange(columns.start, columns.stop), np.arange(rows.start, rows.stop)), -1)
        map_x, map_y = (grid + flow).astype(np.float32).transpose(2, 0, 1)
        carried = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        carried_source = cv2.remap(source_before.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
        sigma = max(1.0, float(np.sqrt(1 / abs(np.linalg.det(frame.matrix[:, :2])))))  # a working-frame pixel
        as_tensor = [torch.from_numpy(x / 255).permute(2, 0, 1)[None] for x in (photo, carried_source)]
        weight = unchanged_weight(as_tensor[0], as_tensor[1], video.temporal_tolerance, sigma)[0, 0].numpy()
        change += (video.steady * weight * reach[rows, columns])[..., None] * (carried - change)
    out = image.copy()
    out[rows, columns] = np.where(reach[rows, columns, None] > 0, np.clip(photo + change + 0.5, 0, 255), now)
    return out, Delivered(change, (rows.start, columns.start))


def cache_path(output: Path) -> Path:
    """The resume cache beside ``output``."""
    return output.with_name(output.name + ".resume")


def _cache_key(edit_name: str, clip: Clip, inputs: dict, cfg: EditConfig, video: VideoConfig, face_index: int) -> str:
    stat = clip.path.stat()
    key = {"edit": edit_name, "source": str(clip.path.resolve()), "mtime": stat.st_mtime_ns, "frames": clip.frames,
           "inputs": inputs, "options": cfg.to_dict(), "face_index": face_index,
           "video_options": {k: v for k, v in asdict(video).items() if k not in RESUMABLE}}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    """The resume cache: its key, the track, one output frame and one row per finished frame, and the state the
    next frame starts from. Every frame's files land together (``write_files``)."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = folder, key
        key_file = folder / "key.txt"
        if folder.exists() and (not key_file.is_file() or key_file.read_text() != key):
            raise OptionError("output", f"{folder} holds an interrupted run with other inputs or options; delete it "
                                        "to start over, or run with the same ones to resume it")
        if not folder.exists():
            write_files([(key_file, lambda tmp: tmp.write_text(key))])

    def track(self) -> Track | None:
        path = self.folder / "track.json"
        return Track.from_json(json.loads(path.read_text())) if path.is_file() else None

    def save_track(self, track: Track) -> None:
        write_files([json_file(self.folder / "track.json", track.to_json())])

    def frame(self, i: int) -> Path:
        return self.folder / f"{i:06d}.png"

    def row(self, i: int) -> Path:
        return self.folder / f"{i:06d}.json"

    def done(self) -> list[dict]:
        """The rows of the frames finished in order from the first."""
        rows: list[dict] = []
        while self.row(len(rows)).is_file() and self.frame(len(rows)).is_file():
            rows.append(json.loads(self.row(len(rows)).read_text()))
        return rows

    def carried(self) -> Carried | None:
        path = self.folder / "state.pt"
        return Carried(**torch.load(path, weights_only=False)) if path.is_file() else None

    def save(self, i: int, image: np.ndarray, row: dict, carried: Carried | None) -> None:
        files = [image_file(self.frame(i), image)]
        if carried is not None:
            files.append((self.folder / "state.pt", lambda tmp: torch.save(vars(carried), tmp)))
        write_files([*files, json_file(self.row(i), row)])  # the row last: a frame with a row is whole


def check_video_output(output: Path, folder: bool, clip: Clip, overwrite: bool, input_files: list[Path]) -> None:
    """Before any work: the files the run will write (the video, or the frames of a ``folder``, and the record),
    never an input and not over an existing file without ``overwrite``."""
    files = [output / name for name in frame_file_names(clip)] if folder else [output]
    files.append(record_path(output))
    written = {p.resolve() for p in files} | {output.resolve()}
    for p in [clip.path, *input_files]:
        if Path(p).resolve() in written:
            raise ImageError(f"refusing to overwrite an input: {p}")
    check_outputs(files, overwrite)


def _edit_frame(edit: Edit, photo: Photo, face: Face, loaded: dict[str, Any], cfg: EditConfig, state: dict,
                before: Carried | None, video: VideoConfig) -> tuple[Any, torch.Tensor]:
    """The edit's result on one frame (warm-started from ``before`` when given) and the frame-space start its
    optimization had."""
    starts: list[torch.Tensor] = []

    def adjust(plan: Plan, frame: Frame) -> Plan:
        starts.append(frame_start(plan, frame))
        return plan if before is None else warm_start(plan, frame, starts[0], before, video)

    result = run_on_face(edit, photo, face, loaded, cfg, progress=False, clip=state, adjust=adjust)
    return result, starts[0]


def _prime(edit: Edit, image: np.ndarray, face: Face, loaded: dict[str, Any], cfg: EditConfig, state: dict) -> None:
    """Fill the edit's per-clip state from the clip's first edited frame, as its run did (a resumed run)."""
    device = resolve_device(cfg.device)
    frame = make_frame(to_tensor(image, device), face, cfg, edit.mask)
    edit.prepare(Setup(image, face, frame, loaded, cfg, device, clip=state))


def with_previous(frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """Each frame with the one before it (None for the first)."""
    previous = None
    for image in frames:
        yield previous, image
        previous = image


def run_clip(edit_name: str, source: Path, inputs: dict[str, Any], output: str | Path, cfg: EditConfig,
             video: VideoConfig, face_index: int = 0, progress: bool = True, overwrite: bool = False,
             extra: dict | None = None, on_frame: Callable[[int], None] | None = None) -> dict:
    """Run an edit through the clip ``source`` (video file or folder of frames) and write ``output`` (a video, or a
    folder of frames when it ends with a slash) and its record; resumes from ``output``'s cache when one is there.
    ``on_frame(i)`` is called before each frame is edited. Returns the record."""
    edit = get_edit(edit_name)
    t0 = time.perf_counter()
    folder = is_frame_folder_output(output)
    output = Path(output)
    if not folder:
        check_clip_output(output)
    clip = open_clip(source)
    loaded = load_inputs(edit, inputs)
    described = describe_inputs(loaded)
    input_files = [Path(p) for v in described.values() for p in (v if isinstance(v, list) else [v])]
    check_video_output(output, folder, clip, overwrite, input_files)
    cache = Cache(cache_path(output), _cache_key(edit.name, clip, described, cfg, video, face_index))
    track = cache.track()
    if track is None:
        track = track_faces(read_frames(clip), video, cfg.landmarks, face_index, progress, clip.frames)
        cache.save_track(track)
    else:
        smooth_track(track, video.landmark_smoothing)
    analysis_s = time.perf_counter() - t0
    rows = cache.done()
    before = cache.carried() if rows else None
    state: dict = {}  # the edit's per-clip state (Setup.clip)
    first_edited = next((i for i, r in enumerate(rows) if r["status"] == "edited"), None)
    # Every frame, the first of a shot too, runs frame_iters at the finest level from its start: a face optimized as
    # deep as a still moves its landmarks past the swap's pull-back tolerance, and the pull-back's warp, driven by the
    # detector's frame-to-frame noise, then jitters (talk_green, 6 frames: flicker 1.69 against 0.48 without it).
    frame_cfg = cfg.replace(levels=1, iters=video.frame_iters)
    bar = tqdm(total=clip.frames, initial=len(rows), desc="frames", unit="frame", disable=not progress)
    for i, (previous_image, image) in enumerate(with_previous(read_frames(clip))):
        if i == first_edited and i < len(rows):
            _prime(edit, image, Face(track.faces[i].box, track.landmarks[i]), loaded, cfg, state)  # type: ignore
        if i < len(rows):
            continue
        if on_frame is not None:
            on_frame(i)
        t1 = time.perf_counter()
        face, points = track.faces[i], track.landmarks[i]
        row: dict[str, Any] = {"frame": i, "cut": i in track.cuts}
        carried = None
        if face is None or points is None:
            out = image
            row.update(status="passed", reason=track.reasons[i])
        else:
            chained = (before is not None and before.index == i - 1 and i not in track.cuts
                       and track.faces[i - 1] is not None)
            warm = chained and video.carry_over
            result, start = _edit_frame(edit, Photo(image, f"{clip.path}#{i}"), Face(face.box, points), loaded,
                                        frame_cfg, state, before if warm else None, video)
            out, delivered = result.image, None
            if video.carry_over and video.steady:
                out, delivered = steadied(result, image, previous_image,
                                          before.delivered if warm and before is not None else None, video)
            carried = Carried(i, (result.frame_result - start).detach().cpu(), result.frame.landmarks,
                              result.frame.image.detach().cpu(), delivered)
            row.update(status="edited", start="carried" if warm else "own", chained=chained,
                       evaluations=len(result.history),
                       loss={k: round(v, 5) for k, v in result.history[-1].items() if k not in ("level", "eval")}
                       if result.history else None,
                       # as used, not rounded: eval rebuilds the editable mask from them, and a mask edge
                       # moved by 0.005 px leaves a pixel beside it outside the mask by a grey level
                       landmarks=points.tolist())
            if not any(r["status"] == "edited" for r in rows):
                row["targets_used"] = result.record.get("targets_used")
        row["seconds"] = round(time.perf_counter() - t1, 3)
        cache.save(i, out, row, carried)
        rows.append(row)
        before = carried if carried is not None else before
        bar.update(1)
    bar.close()
    record = _record(edit.name, clip, output, folder, described, cfg, video, face_index, rows, track, extra)
    names = frame_file_names(clip)
    cached = [cache.frame(i) for i in range(clip.frames)]
    files: list[tuple[Path, Callable[[Path], object]]]
    if folder:
        files = [(output / name, functools.partial(shutil.copyfile, p)) for name, p in zip(names, cached, strict=True)]
    else:
        fps = clip.fps or Fraction(video.fps).limit_denominator(1001)
        files = [(output, lambda tmp: write_video(tmp, (read_image(p) for p in cached), fps, clip.path, video.crf))]
    record["timings"]["analysis_s"] = round(analysis_s, 3)
    record["timings"]["total_s"] = round(analysis_s + sum(r["seconds"] for r in rows), 3)
    write_files([json_file(record_path(output), record), *files], overwrite)
    shutil.rmtree(cache.folder)
    return record


def _record(edit_name: str, clip: Clip, output: Path, folder: bool, inputs: dict, cfg: EditConfig,
            video: VideoConfig, face_index: int, rows: list[dict], track: Track, extra: dict | None) -> dict:
    edited = [r for r in rows if r["status"] == "edited"]
    first = [r["seconds"] for r in edited if not r["chained"]]
    rest = [r["seconds"] for r in edited if r["chained"]]
    return {
        "optimswap": __version__, "edit": edit_name, "source": str(clip.path.resolve()), "inputs": inputs,
        "output": str(output.resolve()), "face_index": face_index, "options": cfg.to_dict(),
        "video": {"frames": clip.frames, "width": clip.width, "height": clip.height,
                  "fps": None if clip.fps is None else str(clip.fps), "sound": clip.audio,
                  "folder": folder, "options": asdict(video)},
        **(extra or {}),
        "targets_used": next((r.get("targets_used") for r in edited), None),
        "cuts": track.cuts, "skipped": [{"frame": r["frame"], "reason": r["reason"]} for r in rows
                                        if r["status"] == "passed"],
        "timings": {"first_frame_s": float(np.mean(first)) if first else None,
                    "rest_frame_s": float(np.mean(rest)) if rest else None},
        "frame_rows": rows,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads()},
    }


__all__ = ["Track", "VideoConfig", "histogram_distance", "run_clip", "shots", "smooth_landmarks", "track_faces",
           "steadied", "unchanged_weight", "warm_start"]
