"""Seconds per evaluation and per iteration of every edit's objective against the bare encoder forward+backward
at the same size (the same layers the objective reads), and peak memory; a table, a CSV and a plot.

python bench/edit_cost.py [--edits swap swap-quality makeup stylize invert] [--sizes 128 256 512]
                          [--photos 1 4 8 16] [--iters N] [--device cpu|cuda] [--out out/edit_cost]

Each case runs in a fresh subprocess at one pyramid level of the given size (as the finest level of a run):
- evaluation: the objective's forward + backward at fixed patch matches (median of ``--repeats``, alternated with
  the encoder passes);
- iteration: a run of the edit's own solver over a level's iterations (the preset's ``iters``, or ``--iters``),
  from the level's start as a run makes it (L-BFGS: ~1.05-1.15 evaluations per iteration with its line search, the
  refreshes of the patch matches amortised), total time / iterations, after a run of 2 iterations (first-run
  allocations);
- set-up: building the level's objective (encoding the targets, the patch losses' preparation), once per level;
- encoder: ``encoder(x, objective.layers)`` forward + backward to the image: for the evaluations, the median of
  ``--repeats`` alternated with them; for the iterations, the mean of two blocks of passes right before and after the
  solver's run, each a quarter of its iterations long (the machine's speed varies over seconds, a single pass's
  does not show it);
- peak memory: growth of the subprocess's peak resident set (/proc/self/status VmHWM; before each part, freed
  heap memory is given back with malloc_trim and the peak reset through /proc/self/clear_refs) over its resident
  set then: the edit's from before its objective is built (set-up, evaluations and solver), the encoder pass's
  with the objective built. On CUDA the same growths of the GPU memory PyTorch allocated (its peak statistics), and
  every timed part ends with a synchronisation.
swap: jennifer/01 onto angelina's 8 photos (the K closest in shape, as the swap picks them); 16 photos are
angelina's 8 followed by tony_blair's 8. swap-quality: the quality preset at its own size (512, 8 photos).
makeup: plain/01 with makeup/01. stylize: jennifer/01 in the medium of styles/01. invert: the W+ projector on
the FFHQ-256 StyleGAN2 architecture with random weights (no download), Adam, its rendering resized to the size (a
case may name another architecture: ``resolution`` and ``channel_base``, e.g. FFHQ-1024's 1024 and 32768).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import FACES, REPO

EDITS = ("swap", "swap-quality", "makeup", "stylize", "invert")
SOURCE = FACES / "identities" / "jennifer" / "01.jpg"
TARGET_FOLDERS = (FACES / "identities" / "angelina", FACES / "identities" / "tony_blair")
CPU = torch.device("cpu")
INVERT_ITERS = 3  # Adam: one evaluation per step and nothing to amortise; a step of the generator is slow on CPU


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA timing ends only when the GPU is done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mib() -> float:
    """This process's resident set now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM) since it started or since the last ``reset_peak``. (Not getrusage's
    ru_maxrss: a child inherits its parent's peak at the fork.)"""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # KiB


def reset_peak(device: torch.device = CPU) -> float:
    """Start a new peak at the memory in use now (CPU: the resident set, through Linux's /proc/self/clear_refs;
    CUDA: PyTorch's allocated GPU memory); returns it. Freed heap memory goes back to the system first, so that
    what the next part allocates shows as growth."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_mib()


def peak_mib(device: torch.device = CPU) -> float:
    """The peak since the last ``reset_peak`` (see there)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def seconds(fn, device: torch.device = CPU) -> float:
    synchronize(device)
    t = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t


# ---------------------------------------------------------------- the edits at one level


def target_cache(out: Path, size: int) -> Path:
    return out / "cache" / f"swap-targets-{size}.pt"


def prepare_swap_targets(out: Path, size: int, folders: tuple[Path, ...] = TARGET_FOLDERS,
                         photos: int | None = None) -> None:
    """Frame and warped target photos at ``size``, once for every photo count: angelina's best-first, then
    tony_blair's (the first K of angelina's are the swap's own choice of K); ``photos``: only the first of each
    folder (a quick check)."""
    from optimswap.edits.swap import SWAP, prepare_targets
    from optimswap.face import find_face
    from optimswap.io import list_images, read_image, to_tensor
    from optimswap.pipeline import make_frame

    path = target_cache(out, size)
    if path.is_file():
        return
    cfg = SWAP.preset().replace(size=size, device="cpu")
    photo = read_image(SOURCE)
    frame = make_frame(to_tensor(photo), find_face(photo), cfg, SWAP.mask)
    sets = [prepare_targets(list_images(folder)[:photos], frame, cfg.replace(n_targets=1000), torch.device("cpu"))
            for folder in folders]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"frame": frame, "images": torch.cat([s.images for s in sets]),
                "valid": torch.cat([s.valid for s in sets])}, path)


def swap_case(case: dict, out: Path, device: torch.device):
    from optimswap.edits.swap import SWAP, TargetSet, swap_objective
    from optimswap.pipeline import Level, MaskedPixels

    cfg = SWAP.preset(case["preset"]).replace(size=case["size"], n_targets=case["photos"], device=device.type)
    saved = torch.load(target_cache(out, case["size"]), weights_only=False)
    k = case["photos"]
    if saved["images"].shape[0] < k:
        raise SystemExit(f"{k} photos asked, {saved['images'].shape[0]} prepared")
    frame = saved["frame"]
    targets = TargetSet(saved["images"][:k].to(device), saved["valid"][:k].to(device),
                        torch.ones(k, 1, 1, 1, device=device), [], [], None, None, None)
    level = Level(cfg.size, frame.image.to(device), frame.mask.to(device), frame.image.to(device))
    return cfg, level, swap_objective(targets, cfg, device), MaskedPixels()


def makeup_case(case: dict, out: Path, device: torch.device):
    from optimswap.edits.makeup import MAKEUP, align_reference, makeup_objective
    from optimswap.face import find_face
    from optimswap.io import read_image, to_tensor
    from optimswap.pipeline import Level, MaskedPixels, make_frame

    cfg = MAKEUP.preset().replace(size=case["size"], device=device.type)
    plain, reference = read_image(FACES / "makeup" / "plain" / "01.jpg"), read_image(FACES / "makeup" / "makeup" /
                                                                                     "01.jpg")
    frame = make_frame(to_tensor(plain, device), find_face(plain), cfg, MAKEUP.mask)
    ref, inside = align_reference(reference, find_face(reference), frame, cfg, device)
    level = Level(cfg.size, frame.image, frame.mask, frame.image)
    return cfg, level, makeup_objective(ref, inside, frame, cfg, device), MaskedPixels()


def stylize_case(case: dict, out: Path, device: torch.device):
    from optimswap.edits.stylize import STYLIZE, make_guides, preview, stylize_objective
    from optimswap.face import find_face
    from optimswap.io import read_image, to_tensor
    from optimswap.pipeline import Level, MaskedPixels, make_frame

    cfg = STYLIZE.preset().replace(size=case["size"], device=device.type)
    photo, style = read_image(SOURCE), read_image(FACES / "styles" / "01.jpg")
    frame = make_frame(to_tensor(photo, device), find_face(photo), cfg, STYLIZE.mask)
    guides = make_guides(style, find_face(style), frame, cfg)
    level = Level(cfg.size, frame.image, frame.mask, preview(guides, cfg))
    return cfg, level, stylize_objective(guides, frame, cfg, device), MaskedPixels()


def invert_case(case: dict, out: Path, device: torch.device):
    from optimswap.gan import Architecture, Generator
    from optimswap.gan.edit import INVERT_PRESETS
    from optimswap.gan.invert import projection, projection_objective
    from optimswap.pipeline import Level

    torch.manual_seed(0)
    # NVlabs paper256 FFHQ config (bench/stylegan_step.py): channel_base 16384, 8 mapping layers of 512; their
    # FFHQ-1024: 1024 px, channel_base 32768.
    arch = Architecture.nvlabs(case.get("resolution", 256), case.get("channel_base", 16384))
    g = Generator(arch).eval().requires_grad_(False).to(device)
    cfg = INVERT_PRESETS["default"].replace(size=case["size"], iters=INVERT_ITERS, w_avg_samples=1000,
                                            device=device.type)
    target = torch.rand(1, 3, cfg.size, cfg.size, device=device)
    parameterization, render = projection(g, cfg, device)
    level = Level(cfg.size, target, torch.ones_like(target[:, :1]), target)
    return cfg, level, projection_objective(cfg, device, target, parameterization, render), parameterization


CASES = {"swap": swap_case, "swap-quality": swap_case, "makeup": makeup_case, "stylize": stylize_case,
         "invert": invert_case}


def measure(case: dict, out: Path, repeats: int) -> dict:
    """One case in this (fresh) process."""
    from optimswap.features import load_encoder
    from optimswap.optim import make_solver

    device = torch.device(case.get("device", "cpu"))
    cfg, level, build, parameterization = CASES[case["edit"]](case, out, device)
    encoder = load_encoder(cfg.encoder, device)
    base = reset_peak(device)
    objective = None

    def make():
        nonlocal objective
        objective = build(level)

    setup_s = seconds(make, device)
    assert objective is not None
    build_peak = peak_mib(device) - base
    bare = encoder_pass(encoder, level.size, objective.layers, device)
    before_encoder = reset_peak(device)
    bare()  # also the warm-up: first-call allocations (and cuDNN's algorithm search) stay out of the timings
    encoder_peak = peak_mib(device) - before_encoder
    reset_peak(device)
    params = parameterization.start(level)
    for p in params:
        p.requires_grad_(True)

    def evaluation():
        for p in params:
            p.grad = None
        total, _ = objective(parameterization.render())
        total.backward()

    evaluation()  # the warm-up, which also makes the first patch matches
    encoder_times, evaluation_times = [], []
    for _ in range(repeats):  # alternated, so that both see the same conditions
        encoder_times.append(seconds(bare, device))
        evaluation_times.append(seconds(evaluation, device))
    iters = case["iters"] or cfg.iters
    # A short run first: the solver's own first-run allocations stay out, as for the evaluations.
    make_solver(cfg).run(parameterization.start(level), parameterization.render, objective, 2, progress=False)
    params = parameterization.start(level)  # afresh; the solver re-matches the patches first, as a level does

    def encoder_block() -> float:
        """Mean seconds of a block of bare passes, a quarter of the run's length: the machine's speed around it."""
        n = max(repeats, iters // 4)
        return seconds(lambda: [bare() for _ in range(n)], device) / n

    encoder_before = encoder_block()
    history: list[dict] = []

    def solve():
        history.extend(make_solver(cfg).run(params, parameterization.render, objective, iters, progress=False))

    iteration_s = seconds(solve, device) / iters
    encoder_run_s = (encoder_before + encoder_block()) / 2
    encoder_s = statistics.median(encoder_times)
    evaluation_s = statistics.median(evaluation_times)
    return {**case, "iters": iters, "layers": "+".join(objective.layers), "setup_s": setup_s, "encoder_s": encoder_s,
            "encoder_run_s": encoder_run_s, "evaluation_s": evaluation_s, "iteration_s": iteration_s,
            "evals_per_iteration": len(history) / iters, "ratio_evaluation": evaluation_s / encoder_s,
            "ratio_iteration": iteration_s / encoder_run_s,
            "edit_peak_mib": max(build_peak, peak_mib(device) - base), "encoder_peak_mib": encoder_peak,
            "threads": torch.get_num_threads(), "device": str(device)}


def encoder_pass(encoder, size: int, layers: list[str], device: torch.device = CPU):
    """The floor of an evaluation: the encoder's forward to ``layers`` and backward to the image."""
    x = torch.rand(1, 3, size, size, device=device, requires_grad=True)

    def run():
        x.grad = None
        sum(f.mean() for f in encoder(x, layers).values()).backward()

    return run


# ---------------------------------------------------------------- the run


def plan(args) -> list[dict]:
    cases = []
    for edit in args.edits:
        if edit == "swap-quality":
            from optimswap.edits.swap import SWAP

            quality = SWAP.preset("quality")
            cases.append({"edit": edit, "preset": "quality", "size": quality.size, "photos": quality.n_targets,
                          "iters": args.iters, "device": args.device})
            continue
        for size in args.sizes:
            if edit == "swap":
                cases += [{"edit": edit, "preset": "default", "size": size, "photos": k, "iters": args.iters,
                           "device": args.device} for k in args.photos]
            else:
                cases.append({"edit": edit, "size": size, "photos": 0,
                              "iters": INVERT_ITERS if edit == "invert" else args.iters, "device": args.device})
    return cases


def run_case(case: dict, args) -> dict:
    """``case`` in a subprocess (its own peak memory); its result is the last line it prints."""
    command = [sys.executable, str(Path(__file__)), "--case", json.dumps(case), "--out", str(args.out),
               "--repeats", str(args.repeats)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def swap_slopes(rows: list[dict]) -> dict[int, float]:
    """Per size: least-squares slope of seconds per iteration against photos, as a share of the encoder pass."""
    slopes = {}
    for size in sorted({r["size"] for r in rows if r["edit"] == "swap"}):
        points = [(r["photos"], r["iteration_s"], r["encoder_run_s"]) for r in rows if r["edit"] == "swap" and
                  r["size"] == size]
        if len(points) < 2:
            continue
        ks, ts = [p[0] for p in points], [p[1] for p in points]
        mean_k, mean_t = statistics.mean(ks), statistics.mean(ts)
        slope = sum((k - mean_k) * (t - mean_t) for k, t in zip(ks, ts, strict=True)) / \
            sum((k - mean_k) ** 2 for k in ks)
        slopes[size] = slope / statistics.median(p[2] for p in points)
    return slopes


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_size, by_photos) = plt.subplots(1, 2, figsize=(11, 4.2))
    for edit in EDITS:
        points = sorted((r["size"], r["iteration_s"], r["encoder_run_s"]) for r in rows if r["edit"] == edit and
                        r["photos"] in (0, 8))
        if not points:
            continue
        line, = by_size.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"{edit} iteration")
        by_size.plot([p[0] for p in points], [p[2] for p in points], "x:", color=line.get_color(),
                     label=f"{edit} encoder pass")
    by_size.set(xscale="log", yscale="log", xlabel="frame side (px)", ylabel="seconds",
                title="cost against size (swap: 8 photos)")
    sizes = sorted({r["size"] for r in rows})
    by_size.minorticks_off()
    by_size.set_xticks(sizes, [str(s) for s in sizes])
    if by_size.lines:
        by_size.legend(fontsize=7)
    swap_sizes = sorted({r["size"] for r in rows if r["edit"] == "swap"})
    for size in swap_sizes:
        points = sorted((r["photos"], r["ratio_iteration"], r["ratio_evaluation"]) for r in rows
                        if r["edit"] == "swap" and r["size"] == size)
        line, = by_photos.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"{size} px iteration")
        by_photos.plot([p[0] for p in points], [p[2] for p in points], "x:", color=line.get_color(),
                       label=f"{size} px evaluation")
    by_photos.set(xlabel="target photos", ylabel="time / encoder pass", title="swap: cost against photos")
    if swap_sizes:
        by_photos.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", nargs="+", default=list(EDITS), choices=EDITS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--photos", type=int, nargs="+", default=[1, 4, 8, 16], help="swap's target photo counts (<= 16)")
    ap.add_argument("--iters", type=int, help=f"solver iterations per case (default: a level's, the preset's iters; "
                                              f"invert: {INVERT_ITERS})")
    ap.add_argument("--repeats", type=int, default=3, help="timed encoder passes and evaluations per case")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", type=Path, default=REPO / "out" / "edit_cost")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one case, in the subprocess
    args = ap.parse_args()
    if args.case:
        print(json.dumps(measure(json.loads(args.case), args.out, args.repeats)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cases = plan(args)
    for size in sorted({c["size"] for c in cases if c["edit"].startswith("swap")}):
        prepare_swap_targets(args.out, size)
    where = (torch.cuda.get_device_name() if args.device == "cuda" else
             f"CPU, {os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())} threads")
    print(f"{where}; iterations per case: {args.iters or 'a level of the preset'} (invert {INVERT_ITERS}); "
          f"medians of {args.repeats}")
    print("| edit | size | photos | s / evaluation | s / iteration | evals / iteration | encoder s (beside evaluations "
          "/ run) | ratio / evaluation | ratio / iteration | set-up s | peak MiB edit | peak MiB encoder |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for case in cases:
        r = run_case(case, args)
        rows.append(r)
        print(f"| {r['edit']} | {r['size']} | {r['photos'] or '-'} | {r['evaluation_s']:.3f} | {r['iteration_s']:.3f} "
              f"| {r['evals_per_iteration']:.2f} | {r['encoder_s']:.3f} / {r['encoder_run_s']:.3f} | "
              f"{r['ratio_evaluation']:.2f} | "
              f"{r['ratio_iteration']:.2f} | {r['setup_s']:.2f} | {r['edit_peak_mib']:.0f} | "
              f"{r['encoder_peak_mib']:.0f} |", flush=True)
    for size, slope in swap_slopes(rows).items():
        print(f"swap {size} px: {100 * slope:+.1f} % of the encoder pass per iteration per added photo")
    with open(args.out / "edit_cost.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "edit_cost.png")
    print(f"wrote {args.out / 'edit_cost.csv'} and {args.out / 'edit_cost.png'}")


if __name__ == "__main__":
    main()
