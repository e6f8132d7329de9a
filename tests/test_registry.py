"""Edits defined here, outside the library, run through the registry, the API, run records, eval and the CLI:
a pixel edit ("brighten the cheeks", one loss) and a latent edit (inversion through a tiny random generator)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from optimswap.config import EditConfig, option
from optimswap.errors import OptionError
from optimswap.eval.report import evaluate_record
from optimswap.face.align import interocular
from optimswap.face.mask import soften
from optimswap.io import read_image
from optimswap.objective import Objective, Term
from optimswap.optim import resize_to
from optimswap.pipeline import Latent, Level, Plan
from optimswap.registry import Edit, Scoring, Setup, edit_names, get_edit, register, run_edit
from optimswap.runs import run_to_files


@dataclass(frozen=True)
class CheekConfig(EditConfig):
    size: int = option(64, "Working frame side.", low=32)
    levels: int = option(1, "Pyramid levels.", low=1)
    iters: int = option(15, "Iterations.", low=1)
    gain: float = option(1.4, "Brightness factor of the cheeks.", low=0)
    color_match_result: bool = option(False, "Colour-match before compositing (would undo the edit).")
    ALIASES: ClassVar[dict[str, str]] = {"g": "gain"}


def cheek_mask(landmarks: np.ndarray, size: int, cfg: CheekConfig, device, dense=None) -> torch.Tensor:
    """Two discs between the jaw and the nose wings, a quarter eye distance wide, feathered."""
    ys, xs = torch.meshgrid(torch.arange(size, device=device), torch.arange(size, device=device), indexing="ij")
    radius = 0.25 * interocular(landmarks)
    mask = torch.zeros(size, size, device=device)
    for jaw, nose in ((3, 31), (13, 35)):
        cx, cy = (landmarks[jaw] + landmarks[nose]) / 2
        mask = torch.maximum(mask, (((xs - cx) ** 2 + (ys - cy) ** 2) <= radius**2).float())
    return soften(mask[None, None], max(cfg.feather * size, 0.5))


class BrightnessLoss(nn.Module):
    def __init__(self, level: Level, gain: float):
        super().__init__()
        self.goal, self.mask = (level.image * gain).clamp(0, 1), level.mask

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return ((image - self.goal) ** 2 * self.mask).sum() / self.mask.sum()


def cheek_gain(s: Scoring) -> dict:
    inside = s.frame.mask > 0.5
    return {"cheek_gain": float(s.output_frame[:, :, inside[0, 0]].mean() / s.frame.image[:, :, inside[0, 0]].mean())}


CHEEKS = register(Edit(
    name="test-cheeks", summary="Brighten the cheeks.", source="photo", inputs=(),
    presets={"default": CheekConfig()},
    prepare=lambda setup: Plan(lambda level: Objective(None, [Term("bright", 1.0, BrightnessLoss(level, setup.cfg.gain),
                                                                   None)])),
    mask=cheek_mask, score=cheek_gain))


class TinyGenerator(nn.Module):
    """A random 16-px generator: latent (1, 8) -> image (1, 3, 16, 16) in [0, 1]."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 3 * 16 * 16))
        self.requires_grad_(False)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(latent)).view(1, 3, 16, 16)


@dataclass(frozen=True)
class InvertConfig(EditConfig):
    size: int = option(64, "Working frame side.", low=32)
    levels: int = option(1, "Pyramid levels.", low=1)
    iters: int = option(60, "Iterations.", low=1)
    optimizer: str = option("adam", "Solver.", choices=("lbfgs", "adam"))
    lr: float = option(0.1, "Step size.", low=0, above=True)
    color_match_result: bool = option(False, "Colour-match before compositing.")


class PixelLoss(nn.Module):
    def __init__(self, goal: torch.Tensor):
        super().__init__()
        self.goal = goal

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return ((image - self.goal) ** 2).mean()


def invert_prepare(setup: Setup) -> Plan:
    """A planted inversion: the goal is the generator's own image at a hidden latent, so it can be reached."""
    generator = TinyGenerator(setup.cfg.seed)
    hidden = torch.randn(1, 8, generator=torch.Generator().manual_seed(setup.cfg.seed + 1))
    with torch.no_grad():
        goal = generator(hidden)
    return Plan(lambda level: Objective(None, [Term("pixel", 1.0, PixelLoss(resize_to(goal, level.size)), None)]),
                parameterization=Latent(generator, torch.zeros(1, 8)), record={"latent_dim": 8})


INVERT = register(Edit(name="test-invert", summary="Fit a tiny generator's latent to a planted image.", source="photo",
                       inputs=(), presets={"default": InvertConfig()}, prepare=invert_prepare))


def test_registry_lists_edits_and_rejects_unknown_or_clashing_ones():
    assert {"swap", "makeup", "test-cheeks", "test-invert"} <= set(edit_names())
    assert get_edit("test-cheeks") is CHEEKS and register(CHEEKS) is CHEEKS  # registering twice is harmless
    with pytest.raises(OptionError, match="unknown edit"):
        get_edit("nope")
    with pytest.raises(ValueError, match="already registered"):
        register(Edit(name="test-cheeks", summary="", source="photo", inputs=(), presets={"default": CheekConfig()},
                      prepare=CHEEKS.prepare))


def test_a_pixel_edit_defined_outside_the_library_runs_through_api_records_and_eval(faces, tmp_path):
    photo = faces / "identities" / "mark" / "01.jpg"
    result = run_edit("test-cheeks", photo, {}, progress=False)
    assert result.history[-1]["total"] < 0.2 * result.history[0]["total"]
    out = tmp_path / "cheeks.png"
    record = run_to_files("test-cheeks", photo, {}, out, CHEEKS.preset(gain=1.3), progress=False)
    assert record["edit"] == "test-cheeks" and record["options"]["gain"] == 1.3
    assert not np.array_equal(read_image(out), result.image)  # another gain, another picture
    row = evaluate_record(out.with_suffix(".json"))
    assert row["edit"] == "test-cheeks" and row["psnr_outside"] == float("inf")
    assert 1.1 < row["cheek_gain"] < 1.35


def test_a_latent_edit_with_a_tiny_generator_fits_and_leaves_the_rest_of_the_photo(faces, tmp_path):
    photo = faces / "identities" / "jennifer" / "01.jpg"
    out = tmp_path / "inverted.png"
    for optimizer in ("adam", "lbfgs"):
        result = run_edit("test-invert", photo, {}, INVERT.preset(optimizer=optimizer, lr=0.1 if optimizer == "adam"
                                                                   else 1.0), progress=False)
        assert result.history[-1]["pixel"] < 0.1 * result.history[0]["pixel"], optimizer
    record = run_to_files("test-invert", photo, {}, out, INVERT.preset(), progress=False)
    assert record["latent_dim"] == 8 and json.loads(out.with_suffix(".json").read_text())["edit"] == "test-invert"
    row = evaluate_record(out.with_suffix(".json"))
    assert row["psnr_outside"] == float("inf") and row["edit"] == "test-invert"


def test_a_registered_edit_gets_a_command_line_command(faces, tmp_path, cli):
    out = tmp_path / "c.png"
    code, stdout, err = cli("test-cheeks", faces / "identities" / "mark" / "01.jpg", "-o", out, "--gain", "1.2",
                            "--iters", "3", "-q")
    assert code == 0, err
    assert json.loads(out.with_suffix(".json").read_text())["options"]["gain"] == 1.2
    code, _, err = cli("test-cheeks", faces / "identities" / "mark" / "01.jpg", "-o", tmp_path / "d.png", "--gain",
                       "nan")
    assert code == 2 and err.strip() == "error: --gain: must be finite, got nan"
