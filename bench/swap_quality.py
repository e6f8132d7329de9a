"""Issue #2 acceptance figures on ../shared/faces: identity moved, landmarks kept, background kept.

python bench/swap_quality.py [--size 256] [--out runs/quality]
Prints a table; writes each result and a side-by-side (source | result) PNG to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from optimswap.config import preset
from optimswap.data import local_faces_dir
from optimswap.face import face_descriptor, find_face, interocular, warp_from_frame
from optimswap.io import read_image, write_image
from optimswap.swap import list_images, swap

PAIRS = [("jennifer/01.jpg", "angelina"), ("mark/01.jpg", "tony_blair"), ("deepface_id29/02.jpg", "jennifer")]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = ap.parse_args()
    faces = local_faces_dir() / "identities"
    args.out.mkdir(parents=True, exist_ok=True)
    print("| source | target set | id dist before | after | drop | landmark NME | PSNR outside mask | PSNR mask<0.5 | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for src_name, person in PAIRS:
        src_path = faces / src_name
        result = swap(src_path, faces / person, preset("default", size=args.size), progress=False)
        source = read_image(src_path)
        mean = np.mean([face_descriptor(t, find_face(t)) for t in map(read_image, list_images(faces / person))], 0)
        f_src, f_out = find_face(source), find_face(result.image)
        before = np.linalg.norm(face_descriptor(source, f_src) - mean)
        after = np.linalg.norm(face_descriptor(result.image, f_out) - mean)
        nme = np.linalg.norm(f_out.landmarks - f_src.landmarks, axis=1).mean() / interocular(f_src.landmarks)
        h, w = source.shape[:2]
        mask = warp_from_frame(result.frame.mask, result.frame.matrix, h, w)[0, 0].numpy()
        stem = f"{src_name.replace('/', '_')[:-4]}_to_{person}"
        write_image(args.out / f"{stem}.png", result.image)
        side = Image.new("RGB", (2 * w, h))
        side.paste(Image.fromarray(source), (0, 0))
        side.paste(Image.fromarray(result.image), (w, 0))
        side.save(args.out / f"{stem}_side.png")
        print(f"| {src_name} | {person} | {before:.3f} | {after:.3f} | {before - after:.3f} | {nme:.4f} | "
              f"{psnr(result.image[mask == 0], source[mask == 0]):.1f} | {psnr(result.image[mask < 0.5], source[mask < 0.5]):.1f} | "
              f"{result.timings['total_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
