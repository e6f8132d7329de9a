"""Issue #5 acceptance figures on ../shared/faces/makeup: every plain photo with two references, degrees 0.5 and 1.

python bench/makeup_quality.py [--size 256] [--out runs/makeup]
Per run: histogram distance (earth mover's, 0-255) of lips / eyes / skin to the reference, output vs plain;
identity distance output <-> plain; PSNR outside all regions; border-ring gradient output / plain.
Writes results and a contact sheet (plain, reference, degree 0.5, degree 1) to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from optimswap.config import preset
from optimswap.data import local_faces_dir
from optimswap.eval.metrics import border_gradient, histogram_distance, identity_distance, psnr
from optimswap.face import face_descriptor, find_face, warp_from_frame, warp_to_frame
from optimswap.io import read_image, to_tensor, write_image
from optimswap.face.regions import union
from optimswap.losses import region_pixels
from optimswap.makeup import align_reference, makeup, region_masks
from optimswap.swap import list_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("runs/makeup"))
    args = ap.parse_args()
    root = local_faces_dir() / "makeup"
    plains, refs = list_images(root / "plain"), list_images(root / "makeup")
    args.out.mkdir(parents=True, exist_ok=True)
    print("| plain | reference | degree | lips before | after | eyes before | after | skin before | after | id to plain | PSNR outside | ring grad ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    sheet = []
    for i, plain_path in enumerate(plains):
        for ref_path in (refs[i % len(refs)], refs[(i + 3) % len(refs)]):
            plain = read_image(plain_path)
            row_pictures = [plain, read_image(ref_path)]
            for degree in (0.5, 1.0):
                cfg = preset("makeup", size=args.size, makeup_degree=degree)
                res = makeup(plain_path, ref_path, cfg, progress=False)
                write_image(args.out / f"{plain_path.stem}_{ref_path.stem}_{degree:g}.png", res.image)
                row_pictures.append(res.image)
                frame = res.frame
                ref_frame, inside = align_reference(read_image(ref_path), res.reference_face, frame, cfg, "cpu")
                out_frame = warp_to_frame(to_tensor(res.image), frame.matrix, cfg.size)
                masks = region_masks(frame.landmarks, cfg.size, cfg, "cpu")
                dist = {}
                for name, m in masks.items():
                    ref_px = region_pixels(ref_frame, m, inside)
                    dist[name] = (histogram_distance(region_pixels(frame.image, m), ref_px),
                                  histogram_distance(region_pixels(out_frame, m), ref_px))
                editable = union(masks.values())
                ring = border_gradient(out_frame, editable) / border_gradient(frame.image, editable)
                h, w = plain.shape[:2]
                outside = warp_from_frame((editable > 0).float(), frame.matrix, h, w)[0, 0].numpy() == 0
                f_out = find_face(res.image)
                ident = identity_distance(face_descriptor(res.image, f_out), face_descriptor(plain, res.source_face))
                print(f"| {plain_path.stem} | {ref_path.stem} | {degree:g} | " + " | ".join(
                    f"{dist[n][0]:.1f} | {dist[n][1]:.1f}" for n in ("lips", "eyes", "skin")) +
                      f" | {ident:.3f} | {psnr(res.image, plain, outside):.1f} | {ring:.2f} |", flush=True)
            sheet.append([np.asarray(Image.fromarray(p).resize((200, 200))) for p in row_pictures])
    Image.fromarray(np.concatenate([np.concatenate(r, 1) for r in sheet], 0)).save(args.out / "contact_sheet.png")


if __name__ == "__main__":
    main()
