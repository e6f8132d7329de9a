"""A swap on a camera-sized photo: seconds of the composite step, of the whole run and of writing the result, and the
peak memory, at 1, 5 and 20 megapixels.

python bench/big_photo.py [--megapixels 1 5 20] [--layout upscaled|padded] [--out DIR]

The photo is identities/mark/01.jpg (0.7 MP) made N megapixels: ``upscaled`` (bicubic, the face grows with the
photo) or ``padded`` (the photo at its own size in the middle of a larger canvas of its mirrored edges: a camera
photo whose face is a small part of it). Each size runs in its own process (``--fast`` preset, 1 level of 2
iterations, 2 target photos: the optimization is not what is measured), with OMP_NUM_THREADS as given to this
script. Peak memory is the process's peak resident set, in total and above its size before the run (what
``optimswap.memory`` estimates; the estimate is printed beside it where this code has one that takes the region).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import FACES, REPO

PHOTO = FACES / "identities" / "mark" / "01.jpg"
TARGETS = FACES / "identities" / "jennifer"


def make_photo(megapixels: float, layout: str, path: Path) -> None:
    photo = Image.open(PHOTO).convert("RGB")
    scale = (megapixels * 1e6 / (photo.width * photo.height)) ** 0.5
    size = (round(photo.width * scale), round(photo.height * scale))
    if layout == "upscaled" or scale <= 1:
        photo.resize(size, Image.Resampling.BICUBIC).save(path, quality=95)
        return
    pad_y, pad_x = (size[1] - photo.height) // 2, (size[0] - photo.width) // 2
    rows = (pad_y, size[1] - photo.height - pad_y)
    columns = (pad_x, size[0] - photo.width - pad_x)
    Image.fromarray(np.pad(np.asarray(photo), (rows, columns, (0, 0)), mode="symmetric")).save(path, quality=95)


def one(photo: Path, output: Path) -> dict:
    """Run the swap in this process; its timings and memory as JSON."""
    from optimswap import memory
    from optimswap.registry import get_edit
    from optimswap.runs import run_to_files

    cfg = get_edit("swap").preset("fast", levels=1, iters=2, n_targets=2, device="cpu")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    record = run_to_files("swap", photo, {"target": TARGETS}, output, cfg, progress=False, overwrite=True)
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with Image.open(photo) as im:
        pixels = im.width * im.height
    result = {"megapixels": pixels / 1e6, "composite_s": record["timings"]["composite_s"],
              "run_s": record["timings"]["total_s"], "write_s": total - record["timings"]["total_s"],
              "peak_mb": peak, "above_start_mb": peak - before}
    if hasattr(memory, "PER_WHOLE_PIXEL"):  # the estimate of the code that crops the face's region
        from optimswap.face import find_face
        from optimswap.io import read_image
        from optimswap.pipeline import photo_region

        image = read_image(photo)
        rows, columns = photo_region(*image.shape[:2], find_face(image), cfg)
        region = (rows.stop - rows.start) * (columns.stop - columns.start)
        result |= {"region_megapixels": region / 1e6,
                   "estimate_mb": memory.estimate_memory(cfg, region, pixels) / 2**20}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 5, 20])
    parser.add_argument("--layout", choices=["upscaled", "padded"], default="upscaled")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", nargs=2, type=Path, help=argparse.SUPPRESS)  # PHOTO OUTPUT: a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="big_photo-"))
    out.mkdir(parents=True, exist_ok=True)
    print("| layout | MP | face region MP | composite s | run s | write s | peak MB | above start MB | estimate MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for megapixels in args.megapixels:
        photo = out / f"{args.layout}_{megapixels:g}mp.jpg"
        make_photo(megapixels, args.layout, photo)
        child = subprocess.run([sys.executable, __file__, "--one", str(photo), str(out / f"{photo.stem}_swap.png")],
                               capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})  # this checkout's code
        r = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"| {args.layout} | {r['megapixels']:.1f} | {r.get('region_megapixels', r['megapixels']):.2f} | "
              f"{r['composite_s']:.1f} | {r['run_s']:.1f} | {r['write_s']:.1f} | {r['peak_mb']:.0f} | "
              f"{r['above_start_mb']:.0f} | {r.get('estimate_mb', float('nan')):.0f} |", flush=True)


if __name__ == "__main__":
    main()
