"""Every hyper-parameter of an edit, in one place, with where its default comes from.

A preset is a named ``SwapConfig``; command-line options override single fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


METHODS = ("full", "paste", "global")
COLOR_SPACES = ("rgb", "lab")
MAKEUP_REGIONS = ("lips", "eyes", "skin")


@dataclass(frozen=True)
class SwapConfig:
    # What is optimized (issue #3 baselines, so that a reader sees what the losses buy):
    # "full" = the objective below; "paste" = pixel loss to the mean of the target photos TPS-warped onto the
    # source's landmarks (what an image editor does; Korshunova et al.'s comparison); "global" = CNNMRF as
    # published (Li & Wand 2016): unrestricted patch search over one target photo on relu3_1 + relu4_1.
    method: str = "full"
    # Working frame: the aligned square crop the optimization runs on.
    size: int = 256  # issue #2 acceptance size
    frame_scale: float = 1.0  # crop side = 4x eye distance at 1.0 (FFHQ alignment rule, Karras et al. 2019)
    # Coarse-to-fine pyramid; notes/calibration.md: 2 levels (64->128) were enough for a clean swap.
    levels: int = 2
    iters: int = 50  # L-BFGS iterations per level (notes: ~95 evaluations over two levels gave a clean swap)
    # Nearest-neighbour targets are recomputed every this many L-BFGS iterations
    # (notes/calibration.md: ~10 kept an iteration at ~1.2x the bare VGG pass).
    refresh_every: int = 10
    lbfgs_history: int = 50

    encoder: str = "vgg16-hed"  # offline default; "vgg19" = torchvision ImageNet weights (online)
    landmarks: str = "dlib"  # offline default; "fan" = face-alignment (online); "mediapipe" = face mesh (offline)

    # Content: Gatys et al. 2016 / Korshunova et al. 2017 use relu4_2.
    content_layer: str = "relu4_2"
    content_weight: float = 1.0
    # Patch (CNNMRF) style: Li & Wand 2016 use relu3_1 + relu4_1; relu1_1 + relu2_1 are added because on the
    # edge-trained HED features colour is otherwise under-constrained (notes/calibration.md: coloured hatching).
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    style_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    style_weight: float = 80.0  # tuned on ../shared/faces (issue #2 note): 40 moved identity ~0.13, 80 ~0.17
    # Landmark restriction: a target patch is a candidate only within this distance of the same facial
    # location, as a fraction of the frame side, capped in feature cells to bound the search cost.
    search_window: float = 0.06
    search_max_cells: int = 3
    # The nearest-neighbour search runs on the principal components keeping this share of the target features'
    # second moment (1.0 = all channels, exact). Measured on jennifer->angelina at 256 px: 0.98 keeps
    # 10/37/83/142 of 64/128/256/512 channels and cuts a re-matching from 2.9 s to ~0.5 s (bench/iteration_cost.py).
    search_energy: float = 0.98
    # Lighting (Korshunova et al. 2017): distance to the source in the lighting network's embedding, in units of
    # its same/different threshold (optimswap/lighting; trained by `optimswap train-lighting`).
    # bench/lighting_case.py, 256 px, without re-shaded targets: lighting error 0.32 -> 0.24 and 0.28 -> 0.22 at
    # 0 -> 30, identity transfer not lower; with them the effect is small and mixed (10 and 100 no better).
    lighting_weight: float = 30.0
    tv_weight: float = 8.0  # (Mahendran & Vedaldi 2015) L1 TV; tuned: lower leaves colour speckle on skin

    # How far the target photos are thin-plate-spline warped towards the source's landmarks (1 = fully).
    # A full warp also imposes the source's face shape on the targets and removes much of their identity
    # (measured: warped angelina photos sit ~0.65 from her mean descriptor vs ~0.36 unwarped); the windowed
    # search absorbs the remaining misalignment.
    warp_strength: float = 0.0  # measured at 256 px: 0 -> id drop 0.16, 0.3 -> 0.13, same NME
    n_targets: int = 8  # Korshunova et al. pick the best-matching target photos by pose
    color_match_targets: bool = True  # notes/calibration.md: keeps the source's skin tone and lighting
    # Re-shade each target photo to the source's lighting before matching (ratio image on the landmark-fitted
    # face geometry, optimswap/lighting/relight.py): with a side-lit source, front-lit target patches otherwise
    # fill the shaded side with dark hair/brow patches (seen on deepface_id29 relit from the side -> jennifer).
    relight_targets: bool = True
    color_match_result: bool = True
    # Soft face mask: forehead raised above the brows by this fraction of the nose length; feather sigma
    # as a fraction of the frame side.
    forehead: float = 0.6
    feather: float = 0.015
    blend_levels: int = 4  # Laplacian-pyramid blending (Burt & Adelson 1983)

    # Makeup transfer (issue #5): BeautyGAN's histogram loss per region, region weights lips, eyes, skin =
    # 1, 1, 0.1 as in BeautyGAN (Li et al. 2018, lambda_lips = lambda_shadow = 1, lambda_face = 0.1) and PSGAN;
    # makeup_weight scales them against the content loss; degree as in IPM-Net (0 = input, 1 = full makeup).
    makeup_regions: tuple[str, ...] = MAKEUP_REGIONS
    makeup_region_weights: tuple[float, ...] = (1.0, 1.0, 0.1)
    makeup_weight: float = 20.0
    makeup_degree: float = 1.0
    # BeautyGAN matches R, G, B one by one; with heavy eye makeup that leaves cyan/red fringes around the eyes
    # (plain 02 x makeup 02). "lab" (CIELAB channels) avoids them but moves identity and the lip colours less
    # surely (bench/makeup_quality.py over makeup/: identity to plain <= 0.35 in 26/28 runs, lips halved in 13/14,
    # against 28/28 and 14/14 for "rgb"; issue #5 note).
    makeup_color_space: str = "rgb"

    seed: int = 0
    device: str = "auto"

    def replace(self, **changes) -> "SwapConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown option(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, options: dict) -> "SwapConfig":
        """Inverse of ``to_dict`` after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {list(METHODS)}")
        if len(self.style_layers) != len(self.style_layer_weights):
            raise ValueError("style_layers and style_layer_weights must have the same length")
        if len(self.makeup_regions) != len(self.makeup_region_weights):
            raise ValueError("makeup_regions and makeup_region_weights must have the same length")
        if not set(self.makeup_regions) <= set(MAKEUP_REGIONS) or not self.makeup_regions:
            raise ValueError(f"makeup_regions must be a non-empty subset of {MAKEUP_REGIONS}; got {self.makeup_regions}")
        if self.makeup_color_space not in COLOR_SPACES:
            raise ValueError(f"makeup_color_space must be one of {COLOR_SPACES}, got {self.makeup_color_space!r}")
        if not 0.0 <= self.makeup_degree <= 1.0:
            raise ValueError(f"makeup_degree must be in [0, 1], got {self.makeup_degree}")
        if self.size < 32 or self.size % 2 ** self.levels:
            raise ValueError(f"size must be >= 32 and divisible by 2**levels (= {2 ** self.levels}), got {self.size}")
        if self.levels < 1 or self.iters < 1 or self.refresh_every < 1:
            raise ValueError("levels, iters and refresh_every must be >= 1")


PRESETS: dict[str, SwapConfig] = {
    "default": SwapConfig(),
    # Quick look / tests: the calibration setting of notes/calibration.md (64 -> 128 px).
    "fast": SwapConfig(size=128, iters=40),
    "quality": SwapConfig(size=384, levels=3, iters=60),
    # Makeup: the colour change is the edit, so the result is not colour-matched back; TV acts on the change.
    "makeup": SwapConfig(iters=40, color_match_result=False, tv_weight=2.0),
}


# What each method changes in a preset; explicit options still win over these.
METHOD_DEFAULTS: dict[str, dict] = {
    "full": {},
    # A paste needs the target's face on the source's landmarks; both baselines stay as published (no lighting).
    "paste": {"warp_strength": 1.0, "levels": 1, "relight_targets": False},
    "global": {"n_targets": 1, "style_layers": ("relu3_1", "relu4_1"), "style_layer_weights": (1.0, 1.0),
               "lighting_weight": 0.0, "relight_targets": False},
}


def preset(name: str, **overrides) -> SwapConfig:
    """Preset ``name``, then the defaults of ``overrides["method"]`` (if given), then the other overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    method = overrides.get("method", PRESETS[name].method)
    if method not in METHOD_DEFAULTS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    return PRESETS[name].replace(**{**METHOD_DEFAULTS[method], **overrides})
