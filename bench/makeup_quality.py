"""Issue #5 acceptance figures on ../shared/faces/makeup: every plain photo with two references, degrees 0.5 and 1.

python bench/makeup_quality.py [--size 256] [--out runs/makeup]
Each run is written as OUT.png + OUT.json (a run whose record exists is kept, so the bench resumes) and scored by
``optimswap eval``'s makeup metrics: histogram distance (earth mover's, 0-255) of lips / eyes / skin to the
reference, plain (before) and output (after); identity distance output <-> plain; PSNR outside all regions;
border-ring gradient output / plain. Prints the table and how many runs meet each acceptance bound, and writes
eval.csv and a contact sheet (plain, reference, degree 0.5, degree 1) to --out.
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
COLUMNS = ["plain", "reference", "degree", "lips_before", "lips_after", "eyes_before", "eyes_after", "skin_before",
           "skin_after", "id_to_source", "psnr_outside", "ring_ratio", "seconds"]


def acceptance(rows: list[dict]) -> list[str]:
    """Issue #5's bounds, as 'passed / runs' lines."""
    full = [r for r in rows if r["degree"] == 1.0]
    half = {(r["plain"], r["reference"]): r for r in rows if r["degree"] == 0.5}
    checks = {
        "lips distance reduced >= 50 % (degree 1)": [r["lips_after"] <= 0.5 * r["lips_before"] for r in full],
        "eyes distance reduced >= 50 % (degree 1)": [r["eyes_after"] <= 0.5 * r["eyes_before"] for r in full],
        "identity to plain <= 0.35": [r["id_to_source"] <= 0.35 for r in rows],
        "PSNR outside the regions >= 40 dB": [r["psnr_outside"] >= 40 for r in rows],
        "ring gradient <= 1.5x plain": [r["ring_ratio"] <= 1.5 for r in rows],
        "degree 0.5 between plain and degree 1 (lips and eyes)": [
            all(r[f"{n}_after"] <= h[f"{n}_after"] <= r[f"{n}_before"] for n in ("lips", "eyes"))
            for r in full if (h := half.get((r["plain"], r["reference"])))],
    }
    return [f"{name}: {sum(ok)}/{len(ok)}" for name, ok in checks.items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("runs/makeup"))
    args = ap.parse_args()
    root = FACES / "makeup"
    plains, refs = list_images(root / "plain"), list_images(root / "makeup")
    args.out.mkdir(parents=True, exist_ok=True)
    records, sheet = [], []
    for i, plain in enumerate(plains):
        for ref in (refs[i % len(refs)], refs[(i + 3) % len(refs)]):
            pictures = [read_image(plain), read_image(ref)]
            for degree in DEGREES:
                output = args.out / f"{plain.stem}_{ref.stem}_{degree:g}.png"
                if not output.with_suffix(".json").exists():
                    run_to_files("makeup", plain, {"reference": ref}, output,
                                 MAKEUP.preset(size=args.size, degree=degree), progress=False, overwrite=True)
                records.append(output.with_suffix(".json"))
                pictures.append(read_image(output))
            sheet.append([np.asarray(Image.fromarray(p).resize((200, 200))) for p in pictures])
    rows = evaluate_runs(records)
    for row in rows:
        row["plain"], row["reference"] = Path(row["source"]).stem, Path(row["reference"]).stem
    print(format_table(rows, COLUMNS))
    print("\n".join(acceptance(rows)))
    write_rows(rows, args.out / "eval.csv", lead=["plain", "reference", "degree"])
    Image.fromarray(np.concatenate([np.concatenate(r, 1) for r in sheet], 0)).save(args.out / "contact_sheet.png")


if __name__ == "__main__":
    main()
