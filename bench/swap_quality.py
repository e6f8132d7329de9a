"""Swap quality on ../shared/faces: each method on each pair, scored by eval, with the issue #11 checks.

python bench/swap_quality.py [--all-pairs | --pairs CSV] [--methods full classic paste global] [--preset default]
                             [--size 256] [--out runs/quality]
--all-pairs: every ordered pair of the identity folders (photo 01 of A -> the folder of B); default: the pairs
of reference_faces/pairs.csv. Prints a summary (mean per method), the per-pair table and the checks; writes each
result and record, eval.csv, and per pair a face-crop sheet at the photo's own resolution
(source | classic | full | the best-shape target photo) plus an overview of all of them. Finished runs are kept.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from optimswap.ablate import Pair, read_pairs
from optimswap.edits.swap import METHODS, SWAP
from optimswap.eval.metrics import border_gradient
from optimswap.eval.plots import face_crop
from optimswap.eval.report import evaluate_runs, format_table, write_rows
from optimswap.face import find_face, frame_matrix, warp_to_frame
from optimswap.io import read_image, to_tensor
from optimswap.runs import run_to_files

from common import FACES, REPO

COLUMNS = ["method", "source", "target", "id_before", "id_after", "id_drop", "retrieved", "nme", "d_yaw", "d_pitch",
           "d_roll", "psnr_outside", "seam", "lighting_error", "hf_ratio", "seconds"]
SUMMARY = ["id_drop", "retrieved", "nme", "hf_ratio", "seam", "psnr_outside", "lighting_error", "seconds"]


def all_pairs() -> list[Pair]:
    people = sorted(p for p in (FACES / "identities").iterdir() if p.is_dir())
    return [Pair(f"{a.name}-{b.name}", a / "01.jpg", {"target": b}) for a, b in itertools.permutations(people, 2)]


def swap_options(items: list[str]) -> dict:
    """``OPTION=VALUE`` items (``--set``) as swap config keyword arguments, names and values checked."""
    extra = {}
    for item in items:
        key, _, value = item.partition("=")
        name = SWAP.config.resolve_name(key)
        extra[name] = SWAP.config.parse_value(name, value)
    return extra


def seam(output: Path, source: Path, size: int) -> float:
    """Gradient on a thin ring along the face-mask border, output over source (the swap's mask, in its frame)."""
    photo = read_image(source)
    face = find_face(photo)
    matrix = frame_matrix(face.landmarks, size)
    frame_landmarks = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    mask = SWAP.mask(frame_landmarks, size, SWAP.preset(), "cpu")
    out_frame, src_frame = (warp_to_frame(to_tensor(read_image(p)), matrix, size) for p in (output, source))
    return border_gradient(out_frame, mask) / border_gradient(src_frame, mask)


def sheet(pair: Pair, out: Path, box: tuple, target: Path) -> np.ndarray:
    """source | classic | full | target crop, each at the photo's own resolution (the target at its own)."""
    crops = [face_crop(read_image(pair.source), box)]
    crops += [face_crop(read_image(out / f"{pair.name}_{m}.png"), box) for m in ("classic", "full")]
    target_photo = read_image(target)
    crops.append(face_crop(target_photo, find_face(target_photo).box))
    side = min(c.shape[0] for c in crops[:3])
    tiles = [np.asarray(Image.fromarray(c).resize((side, side), Image.LANCZOS)) for c in crops]
    row = np.concatenate(tiles, 1)
    Image.fromarray(row).save(out / f"{pair.name}_sheet.png")
    return np.asarray(Image.fromarray(row).resize((4 * 256, 256), Image.LANCZOS))


def checks(rows: list[dict]) -> list[str]:
    """Issue #11's bounds for full against classic, as 'passed / pairs' lines."""
    by = {(r["pair"], r["method"]): r for r in rows if not r.get("error")}
    pairs = sorted({p for p, m in by if m == "full" and (p, "classic") in by})
    full, classic = [by[(p, "full")] for p in pairs], [by[(p, "classic")] for p in pairs]

    def mean(rs, key):
        return float(np.mean([r[key] for r in rs])) if rs else float("nan")

    lines = {
        "target retrieved (full)": [bool(r.get("retrieved")) for r in full],
        "id drop full >= classic": [f["id_drop"] >= c["id_drop"] for f, c in zip(full, classic, strict=True)],
        "NME full <= 0.04": [f["nme"] <= 0.04 for f in full],
        "hf_ratio full in [0.8, 1.25]": [0.8 <= f["hf_ratio"] <= 1.25 for f in full],
        "PSNR outside the mask >= 40 dB (full)": [f["psnr_outside"] >= 40 for f in full],
        "seam full <= 1.3": [f["seam"] <= 1.3 for f in full],
    }
    out = [f"{name}: {sum(ok)}/{len(ok)}" for name, ok in lines.items()]
    out.append(f"mean id drop full {mean(full, 'id_drop'):.3f} vs classic {mean(classic, 'id_drop'):.3f}")
    out.append(f"mean NME full {mean(full, 'nme'):.4f} vs classic {mean(classic, 'nme'):.4f} (bound: classic + 0.005)")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--all-pairs", action="store_true")
    ap.add_argument("--pairs", type=Path, default=REPO / "reference_faces" / "pairs.csv")
    ap.add_argument("--methods", nargs="+", default=["full", "classic", "paste", "global"], choices=METHODS)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--size", type=int)
    ap.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="More swap options (full only).")
    ap.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = swap_options(args.set)
    pairs = all_pairs() if args.all_pairs else read_pairs(args.pairs)
    records, labels = [], []
    for pair in pairs:
        for method in args.methods:
            output = args.out / f"{pair.name}_{method}.png"
            if not output.with_suffix(".json").exists():
                t0 = time.perf_counter()
                cfg = SWAP.preset(args.preset, size=args.size, method=method, **(extra if method == "full" else {}))
                run_to_files("swap", pair.source, pair.inputs, output, cfg, progress=False, overwrite=True)
                print(f"{pair.name} {method}: {time.perf_counter() - t0:.1f} s", flush=True)
            records.append(output.with_suffix(".json"))
            labels.append(pair)
    rows = evaluate_runs(records)
    size = SWAP.preset(args.preset, size=args.size).size
    tiles = {}
    for row, pair, record in zip(rows, labels, records, strict=True):
        row["pair"], row["source"] = pair.name, pair.source.parent.name
        if not row.get("error"):
            row["seam"] = seam(record.with_suffix(".png"), pair.source, size)
        if row["method"] == "full" and "classic" in args.methods and pair.name not in tiles:
            rec = json.loads(record.read_text())
            best = Path(rec["targets_used"][0]["path"])
            tiles[pair.name] = sheet(pair, args.out, tuple(rec["source_face_box"]), best)
    write_rows(rows, args.out / "eval.csv", lead=["pair", "method"])
    if tiles:
        Image.fromarray(np.concatenate(list(tiles.values()), 0)).save(args.out / "overview.png")
    summary = [{"method": m, **{k: float(np.mean([float(r[k]) for r in rows if r.get("method") == m and k in r]))
                                for k in SUMMARY}} for m in args.methods]
    print(format_table(summary, ["method", *SUMMARY]))
    print(format_table(rows, ["pair", *COLUMNS]))
    print("\n".join(checks(rows)))


if __name__ == "__main__":
    main()
