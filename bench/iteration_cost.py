"""Seconds per L-BFGS iteration of the swap objective vs the bare VGG forward+backward at the same size.

python bench/iteration_cost.py [--iters 20] [--sizes 128 256] [--targets 1 4 8]
Iteration cost includes the nearest-neighbour refreshes (every `refresh_every` iterations), amortised.
Target (issue #2): ratio <= 2. A GPU column is added when CUDA is available.
"""

from __future__ import annotations

import argparse
import time

import torch

from optimswap.edits.swap import SWAP, prepare_targets, swap_objective
from optimswap.face import find_face
from optimswap.features import load_encoder
from optimswap.io import list_images, read_image, to_tensor
from optimswap.optim import make_solver
from optimswap.pipeline import Level, make_frame

from common import FACES


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def vgg_pass(cfg, size, device, repeats=5):
    enc = load_encoder(cfg.encoder, device)
    x = torch.rand(1, 3, size, size, device=device, requires_grad=True)
    layers = [cfg.content_layer, *cfg.style_layers]
    sum(f.mean() for f in enc(x, layers).values()).backward()  # warm-up
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        sum(f.mean() for f in enc(x, layers).values()).backward()
    sync(device)
    return (time.perf_counter() - t) / repeats


def iteration(cfg, size, n_targets, device, iters):
    faces = FACES / "identities"
    photo = read_image(faces / "jennifer" / "01.jpg")
    cfg = cfg.replace(size=size, n_targets=n_targets, device=str(device))
    frame = make_frame(to_tensor(photo, device), find_face(photo), cfg, SWAP.mask)
    targets = prepare_targets(list_images(faces / "angelina"), frame, cfg, device)
    objective = swap_objective(targets, cfg, device)(Level(size, frame.image, frame.mask, frame.image))
    param = frame.image.clone()
    render = lambda: frame.image + frame.mask * (param - frame.image)
    sync(device)
    t = time.perf_counter()
    history = make_solver(cfg).run([param], render, objective, iters, progress=False)
    sync(device)
    return (time.perf_counter() - t) / iters, len(history) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 4, 8])
    args = ap.parse_args()
    cfg = SWAP.preset()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"threads={torch.get_num_threads()} refresh_every={cfg.refresh_every} iters={args.iters}")
    print("| device | size | targets | s / iteration | evals / iteration | VGG fwd+bwd s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        iteration(cfg, 128, 1, device, 2)  # warm-up: first-call allocations and weight loading stay out of the table
        for size in args.sizes:
            vgg = vgg_pass(cfg, size, device)
            for k in args.targets:
                per_iter, evals = iteration(cfg, size, k, device, args.iters)
                # An L-BFGS iteration may take more than one evaluation (line search): the fair ratio is per
                # evaluation too.
                print(f"| {device.type} | {size} | {k} | {per_iter:.3f} | {evals:.2f} | {vgg:.3f} "
                      f"| {per_iter / vgg:.2f} |", flush=True)


if __name__ == "__main__":
    main()
