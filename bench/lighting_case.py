"""Issue #4 real case: a source lit from one side, swapped with front-lit targets, lighting loss off vs on.

python bench/lighting_case.py [--size 256] [--weights 0,W] [--relight on,off] [--out runs/lighting_case]
The side-lit sources are photos of people the lighting network never saw, relit by ``relight_photo`` (the
faces folder has no strongly side-lit photo). Prints the eval table (lighting_error = distance of the output's
lightness-gradient fit from the source's; id_drop = identity moved towards the target) for each lighting weight,
with the target photos re-shaded to the source's lighting (relight_targets) and without, and writes per case a
picture: side-lit source | each run in the table's order.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from optimswap.edits.swap import SWAP
from optimswap.eval.report import evaluate_runs, format_table, write_rows
from optimswap.face import find_face
from optimswap.io import read_image, write_image
from optimswap.lighting.relight import Light, direction, relight_photo
from optimswap.runs import run_to_files

from common import FACES

# (source photo, light azimuth in degrees (positive: from image right), target person)
CASES = [("identities/deepface_id29/02.jpg", 60, "jennifer"), ("identities/tony_blair/01.jpg", -60, "mark")]
COLUMNS = ["case", "relight_targets", "lighting_weight", "lighting_error", "id_before", "id_after", "id_drop", "nme",
           "psnr_outside", "hf_ratio", "seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--weights", default=f"0,{SWAP.preset().lighting_weight:g}")
    ap.add_argument("--relight", default="on,off", help="relight_targets settings to run")
    ap.add_argument("--out", type=Path, default=Path("runs/lighting_case"))
    args = ap.parse_args()
    faces = FACES
    weights = [float(w) for w in args.weights.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    records, labels = [], []
    for photo_path, azimuth, target in CASES:
        name = f"{Path(photo_path).parent.name}{Path(photo_path).stem}_az{azimuth}_to_{target}"
        source = args.out / f"{name}_source.png"
        if not source.exists():
            photo = read_image(faces / photo_path)
            light = Light(direction(azimuth, 15), 0.25, 1.0, (1, 1, 1))
            write_image(source, relight_photo(photo, find_face(photo).landmarks, light))
        pictures = [read_image(source)]
        for relit, weight in itertools.product([r == "on" for r in args.relight.split(",")], weights):
            output = args.out / f"{name}_relight{relit:d}_lighting{weight:g}.png"
            if not output.with_suffix(".json").exists():
                cfg = SWAP.preset(size=args.size, lighting_weight=weight, relight_targets=relit)
                run_to_files("swap", source, {"target": faces / "identities" / target}, output, cfg, progress=False,
                             overwrite=True)
            records.append(output.with_suffix(".json"))
            labels.append((name, relit, weight))
            pictures.append(read_image(output))
        write_image(args.out / f"{name}_compare.png", np.concatenate(pictures, 1))
    rows = evaluate_runs(records, faces / "identities")
    for row, (name, relit, weight) in zip(rows, labels, strict=True):
        row["case"], row["relight_targets"], row["lighting_weight"] = name, relit, weight
    print(format_table(rows, COLUMNS))
    write_rows(rows, args.out / "eval.csv", lead=["case", "relight_targets", "lighting_weight"])


if __name__ == "__main__":
    main()
