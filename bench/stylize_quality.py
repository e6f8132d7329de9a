"""Stylization figures: style exemplars x identity photos; the StyleBlit preview and the optimization of the
default (whole portrait), and the optimization of the head region.

python bench/stylize_quality.py [--size 512] [--opt-size 512] [--pairs 01:jennifer 02:mark ...] [--head-from DIR]
    [--out runs/stylize]
Each run is written as OUT.png + OUT.json (a run whose record exists is kept, so the bench resumes) and scored by
``optimswap eval``: dlib distance output <-> photo (id_to_source, evaluation only), Gram and colour histogram
distance to the exemplar before (photo) and after over the edited pixels and over the whole picture (``*_whole_*``),
the share of the picture outside the face still the photograph's, the dlib-free identity proxy, seconds (after one
untimed warm-up run: a fresh process loads its models once). Prints the table and the checks, and writes eval.csv
and a contact sheet (photo | exemplar | result | head region) to --out, both rewritten after every pair.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from optimswap.edits.stylize import STYLIZE
from optimswap.eval.report import evaluate_runs, format_table, write_rows
from optimswap.io import read_image
from optimswap.runs import run_to_files

from common import FACES

PHOTOS = ("jennifer", "mark", "tony_blair")
STYLES = ("01", "02", "03", "04", "05")
# label -> options of the run (besides the size): the default's preview and optimization, the head region's.
RUNS = {"preview": {"method": "preview"}, "optimize": {"method": "optimize"},
        "head": {"method": "optimize", "region": "head"}}
COLUMNS = ["run", "size", "id_to_source", "id_proxy", "gram_before", "gram_after", "gram_whole_before",
           "gram_whole_after", "colour_whole_before", "colour_whole_after", "share_of_photo", "seconds"]
NEAR_ZERO = 0.05  # share of the picture outside the face still the photograph's


def checks(rows: list[dict]) -> list[str]:
    lines = []
    for label in RUNS:
        done = [r for r in rows if Path(r["run"]).name.startswith(label) and not r["error"]]
        tests = {"dlib distance to the photo <= 0.55": [r.get("id_to_source", 9) <= 0.55 for r in done],
                 "Gram distance to the exemplar (edited pixels) at least halved":
                     [r["gram_after"] <= 0.5 * r["gram_before"] for r in done],
                 "Gram distance over the whole picture at least halved":
                     [r["gram_whole_after"] <= 0.5 * r["gram_whole_before"] for r in done],
                 "colour-histogram distance over the whole picture at least halved":
                     [r["colour_whole_after"] <= 0.5 * r["colour_whole_before"] for r in done],
                 f"share of photo outside the face <= {NEAR_ZERO}": [r["share_of_photo"] <= NEAR_ZERO for r in done]}
        lines += [f"{label}: {name}: {sum(ok)}/{len(ok)}" for name, ok in tests.items()]
    return lines


def tile(path: Path, side: int = 256) -> np.ndarray:
    image = Image.fromarray(read_image(path))
    image.thumbnail((side, side))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas)


def warm_up(photo: Path, exemplar: Path, size: int) -> float:
    """One untimed preview, so that the timings are per image: a fresh process first pays imports and model loading
    (dlib's detector and landmarker, MediaPipe's segmentation) once. Returns its seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_to_files("stylize", photo, {"style": exemplar}, Path(tmp) / "warm_up.png",
                     STYLIZE.preset(method="preview", size=size), progress=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512, help="Frame side of the previews.")
    ap.add_argument("--opt-size", type=int, default=512, help="Frame side of the optimization runs.")
    ap.add_argument("--pairs", nargs="*", default=None,
                    help="STYLE:PERSON pairs to optimize, run in this order (default: all 15).")
    ap.add_argument("--head-from", type=Path, default=None,
                    help="Folder of earlier head-region runs (head*_STYLE_PERSON.json) to score instead of running "
                         "them again: the head region's code path is unchanged (tests/test_stylize.py checks it).")
    ap.add_argument("--out", type=Path, default=Path("runs/stylize"))
    args = ap.parse_args()
    pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs is not None else [(s, p) for s in STYLES
                                                                                       for p in PHOTOS]
    seconds = warm_up(FACES / "identities" / PHOTOS[0] / "01.jpg", FACES / "styles" / f"{STYLES[0]}.jpg", args.size)
    print(f"warm-up (imports and model loading, untimed below): {seconds:.2f} s")
    # Rows are scored and written as each run ends, so that an interrupted bench still reports what it did.
    rows: list[dict] = []
    sheet: list[np.ndarray] = []
    for style, person in pairs:
        photo, exemplar = FACES / "identities" / person / "01.jpg", FACES / "styles" / f"{style}.jpg"
        row = [tile(photo), tile(exemplar)]
        for label, options in RUNS.items():
            size = args.size if label == "preview" else args.opt_size
            earlier = sorted(args.head_from.glob(f"head*_{style}_{person}.json")) if args.head_from else []
            if label == "head" and earlier:
                record = earlier[0]
            else:
                out = args.out / f"{label}{size}_{style}_{person}.png"
                if not out.with_suffix(".json").exists():
                    cfg = STYLIZE.preset(size=size, **options)
                    run_to_files("stylize", photo, {"style": exemplar}, out, cfg, progress=False, overwrite=True)
                record = out.with_suffix(".json")
            scored = evaluate_runs([record])[0]
            scored["size"] = int(record.name.split("_")[0].lstrip("abcdefghijklmnopqrstuvwxyz"))
            rows.append(scored)
            print(format_table([scored], COLUMNS).splitlines()[-1], flush=True)
            if label != "preview":  # the sheet shows what a user gets: the default's result and the head region's
                row.append(tile(record.with_suffix(".png")))
        sheet.append(np.concatenate(row, 1))
        write_rows(rows, args.out / "eval.csv")
        Image.fromarray(np.concatenate(sheet, 0)).save(args.out / "contact_sheet.png")
    print(format_table(rows, COLUMNS))
    print("\n".join(checks(rows)))
    print(f"contact sheet: {args.out / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
