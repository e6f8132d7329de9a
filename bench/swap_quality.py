"""Issues #2/#3 figures on ../shared/faces: each method on each pair of reference_faces/pairs.csv, scored by eval.

python bench/swap_quality.py [--size 256] [--methods full paste global] [--out runs/quality]
Prints the eval table; writes each result, its record, a side-by-side (source | result) PNG and eval.csv to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from optimswap.ablate import read_pairs
from optimswap.edits.swap import METHODS, SWAP
from optimswap.eval.report import evaluate_runs, format_table, write_rows
from optimswap.io import read_image
from optimswap.runs import run_to_files

from common import REPO

COLUMNS = ["method", "source", "target", "id_before", "id_after", "id_drop", "retrieved", "nme", "d_yaw", "d_pitch",
           "d_roll", "psnr_outside", "lighting_error", "hf_ratio", "seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--pairs", type=Path, default=REPO / "reference_faces" / "pairs.csv")
    ap.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = ap.parse_args()
    records = []
    for pair in read_pairs(args.pairs):
        for method in args.methods:
            output = args.out / f"{pair.name}_{method}.png"
            run_to_files("swap", pair.source, pair.inputs, output, SWAP.preset(size=args.size, method=method),
                         progress=False, overwrite=True)
            source, result = read_image(pair.source), read_image(output)
            side = Image.new("RGB", (2 * source.shape[1], source.shape[0]))
            side.paste(Image.fromarray(source), (0, 0))
            side.paste(Image.fromarray(result), (source.shape[1], 0))
            side.save(args.out / f"{pair.name}_{method}_side.png")
            records.append(output.with_suffix(".json"))
    rows = evaluate_runs(records)
    for row in rows:
        row["source"] = Path(row["source"]).relative_to(Path(row["source"]).parents[1]).as_posix()
    write_rows(rows, args.out / "eval.csv")
    print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
