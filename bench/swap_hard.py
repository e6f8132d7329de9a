"""Swap on hard faces: the 16 ordered LFW pairs of reference_faces/hard_pairs.csv (beard, moustache, glasses, dark and
light skin, East Asian and other faces, women and men, each both ways) and the 20 ordered pairs of the identity
folders, full against classic, identity retrieved among all 13 people of ../shared/faces (identities/ + lfw/).

python bench/swap_hard.py [--sets hard identities] [--methods full classic] [--preset default] [--out runs/hard]
                          [--set OPTION=VALUE ...] [--only TEXT ...] [--part K/N] [--evaluate-only]
Prints per pair and per class (a pair counts in each class of its class column) the identity checks (verified as the
target: dlib distance to the target's mean < 0.6 and >= 0.6 to the source photo; retrieved), landmark NME, hf_ratio,
seam, skin tone (eval's CIELAB Delta-E over skin in both) and time, then the acceptance checks. Writes the runs,
eval.csv and per pair a face-crop sheet (source | classic | full | the target photo the start used). Finished runs
are kept, so a rerun resumes; --evaluate-only scores the runs already finished and starts none.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from swap_quality import all_pairs, seam, sheet, swap_options

from optimswap.ablate import Pair, read_pairs
from optimswap.edits.swap import METHODS, SWAP
from optimswap.eval.report import evaluate_runs, format_table, write_rows
from optimswap.runs import run_to_files

from common import FACES, REPO

COLUMNS = ["method", "id_after", "id_to_source", "id_drop", "verified", "retrieved", "nme", "hf_ratio", "seam", "tone",
           "seconds", "cpu_s"]
IDENTITIES = "identities"


def hard_pairs(csv_path: Path) -> tuple[list[Pair], dict[str, list[str]]]:
    """The pairs of ``csv_path`` and each pair's classes (its ``class`` column, joined by '+')."""
    pairs = read_pairs(csv_path)
    with open(csv_path, newline="") as f:
        classes = [row["class"].split("+") for row in csv.DictReader(f)]
    return pairs, {pair.name: names for pair, names in zip(pairs, classes, strict=True)}


def people_folder(out: Path) -> Path:
    """A folder of links to every person folder of the faces (identities/ and lfw/): retrieval chooses among them."""
    people = out / "people"
    people.mkdir(exist_ok=True)
    for person in sorted([*(FACES / IDENTITIES).iterdir(), *(FACES / "lfw").iterdir()]):
        link = people / person.name
        if person.is_dir() and not link.exists():
            link.symlink_to(person.resolve())
    return people


def verified(row: dict) -> bool:
    """Recognised as the target (< 0.6 to the target's mean) and not as the source (>= 0.6 to the source photo)."""
    return "id_after" in row and row["id_after"] < 0.6 and row.get("id_to_source", 0) >= 0.6


def mean(rows: list[dict], key: str) -> float:
    values = [float(r[key]) for r in rows if key in r]
    return float(np.mean(values)) if values else float("nan")


def per_class(rows: list[dict], classes: dict[str, list[str]], methods: list[str]) -> list[dict]:
    """One summary row per class and method: pairs, verified, retrieved, means of NME, tone and seam."""
    names = sorted({c for cs in classes.values() for c in cs})
    out = []
    for name in names:
        for method in methods:
            chosen = [r for r in rows if r.get("method") == method and name in classes.get(r["pair"], [])]
            out.append({"class": name, "method": method, "pairs": len(chosen),
                        "verified": sum(verified(r) for r in chosen),
                        "retrieved": sum(bool(r.get("retrieved")) for r in chosen),
                        **{k: mean(chosen, k) for k in ("id_drop", "nme", "tone", "seam", "hf_ratio")}})
    return out


def checks(rows: list[dict], classes: dict[str, list[str]]) -> list[str]:
    """The acceptance bounds for full (against classic on the same pair), as 'passed / pairs' lines."""
    by = {(r["pair"], r["method"]): r for r in rows if not r.get("error")}
    pairs = sorted({p for p, m in by if m == "full" and (p, "classic") in by})
    full, classic = [by[(p, "full")] for p in pairs], [by[(p, "classic")] for p in pairs]
    twenty = [i for i, p in enumerate(pairs) if IDENTITIES in classes[p]]
    lines = {
        "verified as the target (full)": [verified(r) for r in full],
        "verified as the target (classic)": [verified(r) for r in classic],
        "target retrieved (full)": [bool(r.get("retrieved")) for r in full],
        "target retrieved (classic)": [bool(r.get("retrieved")) for r in classic],
        "NME full <= classic + 0.005": [f["nme"] <= c["nme"] + 0.005 for f, c in zip(full, classic, strict=True)],
        "hf_ratio full in [0.8, 1.25]": [0.8 <= f["hf_ratio"] <= 1.25 for f in full],
        "seam full <= 1.3": [f["seam"] <= 1.3 for f in full],
        "tone full <= 5 dE": [f["tone"] <= 5 for f in full],
        "identity pairs: id drop full >= classic": [full[i]["id_drop"] >= classic[i]["id_drop"] for i in twenty],
    }
    out = [f"{name}: {sum(ok)}/{len(ok)}" for name, ok in lines.items()]
    out.append(f"identity pairs: mean NME full {mean([full[i] for i in twenty], 'nme'):.4f} vs classic "
               f"{mean([classic[i] for i in twenty], 'nme'):.4f} (bound: classic + 0.005)")
    out.append(f"full seconds per swap: mean {mean(full, 'seconds'):.1f}, max "
               f"{max((r['seconds'] for r in full), default=float('nan')):.1f} (shared CPU: indicative); CPU "
               f"seconds: mean {mean(full, 'cpu_s'):.1f}, max {max((r.get('cpu_s', 0) for r in full), default=0):.1f}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["hard", IDENTITIES], choices=["hard", IDENTITIES])
    ap.add_argument("--pairs", type=Path, default=REPO / "reference_faces" / "hard_pairs.csv")
    ap.add_argument("--methods", nargs="+", default=["full", "classic"], choices=METHODS)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--size", type=int)
    ap.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="More swap options (full only).")
    ap.add_argument("--only", nargs="*", default=[], help="Only the pairs whose names contain one of these.")
    ap.add_argument("--part", default="0/1", metavar="K/N",
                    help="Every N-th pair from the K-th (0-based): N processes share the pairs, each its own --out.")
    ap.add_argument("--evaluate-only", action="store_true", help="Score the finished runs; start none.")
    ap.add_argument("--out", type=Path, default=Path("runs/hard"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = swap_options(args.set)
    pairs, classes = hard_pairs(args.pairs) if "hard" in args.sets else ([], {})
    if IDENTITIES in args.sets:
        pairs += all_pairs()
        classes.update({pair.name: [IDENTITIES] for pair in all_pairs()})
    if args.only:
        pairs = [p for p in pairs if any(text in p.name for text in args.only)]
    part, parts = (int(n) for n in args.part.split("/"))
    pairs = pairs[part::parts]
    # CPU seconds of each run: with one thread, what it takes on this CPU without the other users' load.
    cpu_file = args.out / "cpu_seconds.json"
    cpu = json.loads(cpu_file.read_text()) if cpu_file.exists() else {}
    records, labels = [], []
    for pair in pairs:
        for method in args.methods:
            output = args.out / f"{pair.name}_{method}.png"
            if not output.with_suffix(".json").exists():
                if args.evaluate_only:
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                cfg = SWAP.preset(args.preset, size=args.size, method=method, **(extra if method == "full" else {}))
                run_to_files("swap", pair.source, pair.inputs, output, cfg, progress=False, overwrite=True)
                cpu[output.stem] = time.process_time() - c0
                cpu_file.write_text(json.dumps(cpu, indent=1))
                print(f"{pair.name} {method}: {time.perf_counter() - t0:.1f} s, CPU {cpu[output.stem]:.1f} s",
                      flush=True)
            records.append(output.with_suffix(".json"))
            labels.append(pair)
    rows = evaluate_runs(records, people_folder(args.out))
    size = SWAP.preset(args.preset, size=args.size).size
    finished = {(pair.name, json.loads(r.read_text())["options"]["method"]) for pair, r in zip(labels, records,
                                                                                               strict=True)}
    for row, pair, record in zip(rows, labels, records, strict=True):
        row["pair"], row["class"] = pair.name, "+".join(classes[pair.name])
        if record.stem in cpu:
            row["cpu_s"] = cpu[record.stem]
        if not row.get("error"):
            row["seam"] = seam(record.with_suffix(".png"), pair.source, size)
            row["verified"] = verified(row)
        if row.get("method") == "full" and (pair.name, "classic") in finished:
            rec = json.loads(record.read_text())
            sheet(pair, args.out, tuple(rec["source_face_box"]), Path(rec["targets_used"][0]["path"]))
    write_rows(rows, args.out / "eval.csv", lead=["pair", "class", "method"])
    print(format_table(rows, ["pair", *COLUMNS]))
    print(format_table(per_class(rows, classes, args.methods),
                       ["class", "method", "pairs", "verified", "retrieved", "id_drop", "nme", "tone", "seam",
                        "hf_ratio"]))
    print("\n".join(checks(rows, classes)))


if __name__ == "__main__":
    main()
