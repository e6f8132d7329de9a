"""Issue #13 acceptance figures on ../shared/faces/makeup: every plain photo with two references, degrees 0.5 and
1, against BeautyGAN's global histogram objective; and makeup removal (makeup photos with plain references).

python bench/makeup_quality.py [--size 256] [--landmarks dlib|mediapipe] [--out runs/makeup]
Each run is written as OUT.png + OUT.json (a run whose record exists is kept, so the bench resumes) and scored by
``optimswap eval``'s makeup metrics: per region, histogram distance (earth mover's, 0-255) and spatial distance
(CIELAB Delta-E at the same place) to the reference, plain (before) and output (after); identity distance
output <-> plain; PSNR outside all regions; border-ring gradient output / plain. Prints the tables and how many
runs meet each acceptance bound, and writes eval.csv, removal.csv and two contact sheets to --out:
contact_sheet.png (plain | reference | degree 0.5 | degree 1 | preset beautygan at degree 1) and removal_sheet.png
(makeup photo | plain reference | output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from optimswap.edits.makeup import MAKEUP
from optimswap.eval.report import evaluate_runs, format_table, write_rows
from optimswap.io import list_images, read_image
from optimswap.runs import run_to_files

from common import FACES

DEGREES = (0.5, 1.0)
REMOVALS = 3  # makeup photos 01.. made bare with plain photos 01.. as references
COLUMNS = ["plain", "reference", "preset", "degree", "lips_spatial_before", "lips_spatial_after",
           "eyes_spatial_before", "eyes_spatial_after", "eyes_upper_spatial_after", "eyes_lower_spatial_after",
           "lips_before", "lips_after", "eyes_before", "eyes_after", "skin_before", "skin_after", "id_to_source",
           "psnr_outside", "ring_ratio", "seconds"]


def reduced(row: dict, name: str, share: float) -> bool:
    """The run's ``name`` distance after is at most (1 - share) of before."""
    return row[f"{name}_after"] <= (1 - share) * row[f"{name}_before"]


def acceptance(rows: list[dict]) -> list[str]:
    """Issue #13's bounds on the default preset, as 'passed / runs' lines."""
    rows = [r for r in rows if r["preset"] == "default"]
    full = [r for r in rows if r["degree"] == 1.0]
    half = {(r["plain"], r["reference"]): r for r in rows if r["degree"] == 0.5}
    names = ("lips_spatial", "eyes_spatial", "lips", "eyes")
    checks = {
        "lips spatial distance reduced >= 50 % (degree 1)": [reduced(r, "lips_spatial", 0.5) for r in full],
        "eye-region spatial distance reduced >= 40 % (degree 1)": [reduced(r, "eyes_spatial", 0.4) for r in full],
        "lips histogram distance reduced >= 50 % (degree 1)": [reduced(r, "lips", 0.5) for r in full],
        "eyes histogram distance reduced >= 50 % (degree 1)": [reduced(r, "eyes", 0.5) for r in full],
        "identity to plain <= 0.35": [r["id_to_source"] <= 0.35 for r in rows],
        "PSNR outside the regions >= 40 dB": [r["psnr_outside"] >= 40 for r in rows],
        "ring gradient <= 1.5x plain": [r["ring_ratio"] <= 1.5 for r in rows],
        "degree 0.5 between plain and degree 1 (lips, eyes; spatial and histogram)": [
            all(r[f"{n}_after"] <= h[f"{n}_after"] <= r[f"{n}_before"] for n in names)
            for r in full if (h := half.get((r["plain"], r["reference"])))],
    }
    return [f"{name}: {sum(ok)}/{len(ok)}" for name, ok in checks.items()]


def removal_acceptance(rows: list[dict]) -> list[str]:
    checks = {
        "removal: lips spatial distance to the plain reference halved": [reduced(r, "lips_spatial", 0.5) for r in rows],
        "removal: eye-region spatial distance to the plain reference halved": [
            reduced(r, "eyes_spatial", 0.5) for r in rows],
        "removal: identity to the makeup photo <= 0.35": [r["id_to_source"] <= 0.35 for r in rows],
    }
    return [f"{name}: {sum(ok)}/{len(ok)}" for name, ok in checks.items()]


def run(source: Path, reference: Path, output: Path, preset: str, degree: float, args: argparse.Namespace) -> Path:
    """Record of the run (made unless it exists)."""
    if not output.with_suffix(".json").exists():
        cfg = MAKEUP.preset(preset, size=args.size, landmarks=args.landmarks, degree=degree)
        run_to_files("makeup", source, {"reference": reference}, output, cfg, progress=False, overwrite=True)
    return output.with_suffix(".json")


def thumbnail(path: Path) -> np.ndarray:
    return np.asarray(Image.fromarray(read_image(path)).resize((200, 200)))


def scored(records: list[Path], presets: list[str]) -> list[dict]:
    rows = evaluate_runs(records)
    for row, preset in zip(rows, presets, strict=True):
        row["plain"], row["reference"], row["preset"] = Path(row["source"]).stem, Path(row["reference"]).stem, preset
    return rows


def save_sheet(sheet: list[list[np.ndarray]], path: Path) -> None:
    Image.fromarray(np.concatenate([np.concatenate(r, 1) for r in sheet], 0)).save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--landmarks", default="dlib", help="Landmark backend: mediapipe draws the regions from its mesh.")
    ap.add_argument("--out", type=Path, default=Path("runs/makeup"))
    args = ap.parse_args()
    root = FACES / "makeup"
    plains, refs = list_images(root / "plain"), list_images(root / "makeup")
    args.out.mkdir(parents=True, exist_ok=True)
    records, presets, sheet = [], [], []
    for i, plain in enumerate(plains):
        for ref in (refs[i % len(refs)], refs[(i + 3) % len(refs)]):
            pictures = [thumbnail(plain), thumbnail(ref)]
            for preset, degree in [("default", d) for d in DEGREES] + [("beautygan", 1.0)]:
                output = args.out / f"{plain.stem}_{ref.stem}_{preset}_{degree:g}.png"
                records.append(run(plain, ref, output, preset, degree, args))
                presets.append(preset)
                pictures.append(thumbnail(output))
            sheet.append(pictures)
    rows = scored(records, presets)
    print(format_table(rows, COLUMNS))
    print("\n".join(acceptance(rows)))
    write_rows(rows, args.out / "eval.csv", lead=["plain", "reference", "preset", "degree"])
    save_sheet(sheet, args.out / "contact_sheet.png")

    removal, removal_sheet = [], []
    for made_up, bare in zip(refs[:REMOVALS], plains[:REMOVALS], strict=True):
        output = args.out / f"removal_{made_up.stem}_{bare.stem}.png"
        removal.append(run(made_up, bare, output, "default", 1.0, args))
        removal_sheet.append([thumbnail(made_up), thumbnail(bare), thumbnail(output)])
    removal_rows = scored(removal, ["default"] * len(removal))
    print(format_table(removal_rows, COLUMNS))
    print("\n".join(removal_acceptance(removal_rows)))
    write_rows(removal_rows, args.out / "removal.csv", lead=["plain", "reference", "preset", "degree"])
    save_sheet(removal_sheet, args.out / "removal_sheet.png")


if __name__ == "__main__":
    main()
