"""Seconds per inversion step of the full FFHQ-256 StyleGAN2 architecture (random weights, no download): one
forward + backward of the W+ projector objective (synthesis with noise maps, VGG distance, pixel MSE, noise
regularization), as the ``invert`` edit's Adam step runs it.

python bench/stylegan_step.py [--steps 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from optimswap.gan import Architecture, Generator
from optimswap.gan.edit import INVERT_PRESETS
from optimswap.gan.invert import projection, projection_objective
from optimswap.pipeline import Level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # NVlabs paper256 FFHQ config: channel_base 16384, 8 mapping layers of 512.
    g = Generator(Architecture.nvlabs(256, 16384)).eval().requires_grad_(False).to(device)
    cfg = INVERT_PRESETS["default"].replace(w_avg_samples=1000, device=args.device)
    parameterization, render = projection(g, cfg, device)
    target = torch.rand(1, 3, 256, 256, device=device)
    level = Level(256, target, torch.ones_like(target[:, :1]), target)
    objective = projection_objective(cfg, device, target, parameterization, render)(level)
    params = parameterization.start(level)
    for p in params:
        p.requires_grad_(True)
    times = []
    for _ in range(args.steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        total, _ = objective(parameterization.render())
        total.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(f"FFHQ-256 W+ inversion step on {device} ({args.threads} threads): "
          f"{min(times[1:]):.3f} s best, {sum(times[1:]) / args.steps:.3f} s mean of {args.steps}")


if __name__ == "__main__":
    main()
