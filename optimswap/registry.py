"""Edits by name: what each one supplies to the pipeline, and the one way to run any of them.

An edit is one module (``optimswap/edits/``) that registers an ``Edit``: its config class and presets, the
inputs it takes besides the photo it edits, its editable mask, a ``prepare`` step that returns the pipeline's
plan (objective builder, parameterization, record additions), and optionally its own evaluation metrics.
The command line, run records, eval and ablate find edits here, so a new edit needs no change elsewhere.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimswap.config import EditConfig
from optimswap.errors import ImageError, OptionError
from optimswap.face import Face, face_mask, find_face
from optimswap.io import list_images, read_image
from optimswap.memory import check_memory
from optimswap.optim import Solver
from optimswap.pipeline import EditResult, Frame, MaskFn, Plan, frame_moved, photo_region, resolve_device, run_pipeline

INPUT_KINDS = ("photo", "photos")
PhotoLike = str | os.PathLike | np.ndarray


@dataclass(frozen=True)
class Input:
    """An input of an edit besides the photo it edits: one photo, or several (a folder or a list of files)."""

    name: str
    kind: str
    help: str

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Photo:
    """A loaded photo input and what to call it in messages and records."""

    image: np.ndarray
    name: str  # resolved path, or "<array>"


@dataclass(frozen=True)
class Setup:
    """What ``Edit.prepare`` gets: the part of the photo around the face (``pipeline.photo_region``) and the face and
    aligned frame in its coordinates, the loaded inputs, options, device, and where that part lies in the photo."""

    photo: np.ndarray
    face: Face
    frame: Frame
    inputs: dict[str, Any]  # name -> Photo ("photo" inputs) or list[Path] ("photos" inputs)
    cfg: Any
    device: torch.device
    offset: tuple[int, int] = (0, 0)  # (x, y) of ``photo``'s top-left pixel in the whole photo
    # What the edit keeps from one frame of a clip to the next (what it prepares once per clip); None for a still.
    clip: dict | None = None


@dataclass(frozen=True)
class Scoring:
    """What ``Edit.score`` gets from eval: the run's record, options, photos and faces, frame-space images."""

    record: dict
    cfg: Any
    source: np.ndarray
    output: np.ndarray
    face: Face  # the source photo's face (dlib, the evaluation's landmarks)
    output_face: Face | None  # the face found in the output at the same place, None if none
    frame: Frame  # the source's frame, with the edit's editable mask
    output_frame: torch.Tensor  # the output resampled into the same frame
    identities_root: Path | None


def face_region(landmarks: np.ndarray, size: int, cfg: Any, device: torch.device,
                dense: np.ndarray | None = None) -> torch.Tensor:
    """The default editable mask: the soft face mask (jaw line plus a raised forehead)."""
    return face_mask(landmarks, size, cfg.forehead, cfg.feather, device=device)


@dataclass(frozen=True)
class Edit:
    name: str
    summary: str  # one line, for the command line
    source: str  # what the edited photo is called ("source", "plain", ...)
    inputs: tuple[Input, ...]
    presets: Mapping[str, EditConfig]  # must contain "default"
    prepare: Callable[[Setup], Plan]
    mask: MaskFn = face_region
    score: Callable[[Scoring], dict] | None = None
    result_type: type[EditResult] = EditResult

    def __post_init__(self) -> None:
        if "default" not in self.presets:
            raise ValueError(f"edit {self.name!r} has no 'default' preset")
        if len({type(c) for c in self.presets.values()}) != 1:
            raise ValueError(f"edit {self.name!r}: all presets must be of one config class")

    @property
    def config(self) -> type[EditConfig]:
        return type(self.presets["default"])

    def preset(self, name: str = "default", **overrides: Any) -> Any:
        """Preset ``name`` with ``overrides`` (None = keep) and the values they imply."""
        if name not in self.presets:
            raise OptionError("preset",
                              f"unknown preset {name!r} for {self.name}; choose from {', '.join(self.presets)}")
        return self.presets[name].with_overrides(**overrides)


_REGISTRY: dict[str, Edit] = {}


def register(edit: Edit) -> Edit:
    """Make ``edit`` available by name (to the command line, eval and ablate too)."""
    if _REGISTRY.get(edit.name, edit) is not edit:
        raise ValueError(f"an edit named {edit.name!r} is already registered")
    _REGISTRY[edit.name] = edit
    return edit


def _builtins() -> None:
    importlib.import_module("optimswap.edits")


def edit_names() -> list[str]:
    _builtins()
    return sorted(_REGISTRY)


def get_edit(name: str | Edit) -> Edit:
    if isinstance(name, Edit):
        return name
    _builtins()
    if name not in _REGISTRY:
        raise OptionError("edit", f"unknown edit {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def load_photo(value: PhotoLike, role: str) -> Photo:
    """A photo from a path or an RGB uint8 (H, W, 3) array."""
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
            raise ImageError(f"{role}: expected an RGB uint8 (H, W, 3) array, got {value.dtype} {value.shape}")
        return Photo(value, "<array>")
    return Photo(read_image(value), str(Path(value).resolve()))


def load_inputs(edit: Edit, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Each declared input read (photos) or listed (photo sets); a clear error for missing or unknown ones."""
    expected = {i.name for i in edit.inputs}
    if set(inputs) != expected:
        raise OptionError("inputs", f"{edit.name} takes {sorted(expected)}, got {sorted(inputs)}")
    return {i.name: load_photo(inputs[i.name], i.name) if i.kind == "photo" else list_images(inputs[i.name])
            for i in edit.inputs}


def describe_inputs(loaded: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs as they go into a run record: resolved paths (arrays as "<array>")."""
    return {k: v.name if isinstance(v, Photo) else [str(Path(p).resolve()) for p in v] for k, v in loaded.items()}


def run_edit(edit: str | Edit, source: PhotoLike, inputs: Mapping[str, Any], cfg: EditConfig | None = None,
             face_index: int = 0, solver: Solver | None = None, progress: bool = True) -> Any:
    """Run ``edit`` on the face ``face_index`` (0 = largest) of ``source``; returns the edit's result type."""
    edit = get_edit(edit)
    cfg = edit.preset() if cfg is None else cfg
    if not isinstance(cfg, edit.config):
        raise OptionError("config", f"{edit.name} needs a {edit.config.__name__}, got {type(cfg).__name__}")
    photo = load_photo(source, edit.source)
    loaded = load_inputs(edit, inputs)
    face = find_face(photo.image, cfg.landmarks, face_index, name=photo.name)
    return run_on_face(edit, photo, face, loaded, cfg, solver, progress)


def run_on_face(edit: Edit, photo: Photo, face: Face, loaded: dict[str, Any], cfg: EditConfig,
                solver: Solver | None = None, progress: bool = True, clip: dict | None = None,
                adjust: Callable[[Plan, Frame], Plan] | None = None) -> Any:
    """``run_edit`` on a given ``face`` of ``photo`` with its inputs loaded (``load_inputs``); a clip's frames pass
    the edit's ``clip`` state (``Setup.clip``) and ``adjust`` the plan to the frames before (warm start, temporal
    term)."""
    height, width = photo.image.shape[:2]
    rows, columns = photo_region(height, width, face, cfg)
    region = photo.image[rows, columns]
    # Before targets and models are loaded: a run that cannot fit stops at once.
    check_memory(cfg, region.shape[0] * region.shape[1], height * width, resolve_device(cfg.device))
    local = face.moved(-columns.start, -rows.start)

    def prepare(frame: Frame, device: torch.device) -> Plan:
        plan = edit.prepare(Setup(region, local, frame, loaded, cfg, device, (columns.start, rows.start), clip))
        return plan if adjust is None else adjust(plan, frame)

    result, plan = run_pipeline(region, local, cfg, edit.mask, prepare, solver, progress)
    image = photo.image.copy()
    image[rows, columns] = result.image
    result = dataclasses.replace(result, image=image, source_face=face,
                                 frame=frame_moved(result.frame, columns.start, rows.start))
    result.record = {"source": photo.name, "inputs": describe_inputs(loaded), **result.record}
    return edit.result_type(**vars(result), **plan.result)
