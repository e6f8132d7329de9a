"""The GPU check, in one command: the device tests on CUDA, the cost of each edit against the bare encoder pass,
the demo swap and the quality preset on one pair, and whether TF32 convolutions change the encoder's results;
one table (seconds, ratio to the bare encoder pass, peak memory) and everything under one folder.

python bench/gpu_check.py [--device cuda|cpu] [--tiny] [--budget SECONDS] [--out out/gpu_check]

Written to be run when a GPU is lent for a few minutes: the full check on one H100 is planned to take under ten
(each step after the time ``--budget`` has run out is left out and said so, so a late step never costs the rest).
``--device cpu --tiny`` runs the same steps on small settings in seconds (CI runs it; there the device tests are
the CPU suite's own).

Rows (the cost rows are ``bench/edit_cost.py``'s measurement, run in this process):
- device tests: ``pytest -m cuda`` (the device fixture's CUDA cases), its log in ``tests.log``;
- swap 256 and 512 px with 8 photos, makeup, stylize at 256 and 512 px, invert on the FFHQ-256 (at 256 px) and
  FFHQ-1024 (at 1024 px) architectures with random weights: seconds per solver iteration, its ratio to the bare
  encoder pass (forward to the objective's layers and backward, at the same size) beside it, set-up seconds;
- demo swap (jennifer/01 <- angelina's photos, default preset) and the quality preset on the same pair, as a user
  runs them (face detection, targets, optimization, finish; outputs ``demo.png`` and ``quality.png`` with their
  records): total seconds, ratio to the bare encoder pass at the run's size (the run in encoder passes);
- TF32: the encoder pass at 512 px with cuDNN's TF32 convolutions, its ratio to the float32 pass, and the
  relative differences of its features and image gradient (the ``tf32`` option stays off until these are read;
  on the CPU, where the flag changes nothing, the row checks the step itself).
Peak memory: the GPU memory PyTorch allocated during the step beyond what it held before (CPU: the growth of the
resident set).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from edit_cost import (
    SOURCE,
    TARGET_FOLDERS,
    encoder_pass,
    measure,
    peak_mib,
    prepare_swap_targets,
    reset_peak,
    seconds,
)

from common import FACES, REPO

FULL = {  # the check on a GPU
    "swap_sizes": (256, 512), "photos": 8, "sizes": (256, 512), "iters": None,
    "invert": ((256, 256, 16384), (1024, 1024, 32768)), "invert_iters": 50, "run": {}, "run_photos": None,
    "tf32_size": 512, "repeats": 5,
}
TINY = {  # the same steps in seconds on a CPU (CI)
    "swap_sizes": (64,), "photos": 2, "sizes": (64,), "iters": 2,
    "invert": ((32, 32, 1024),), "invert_iters": 2, "run_photos": 2,
    # no landmark pull-back: its repeated face detection on the whole photo is most of a tiny run's time
    "run": {"size": 64, "levels": 1, "iters": 2, "landmark_tolerance": 0.0},
    "tf32_size": 64, "repeats": 1,
}


class Check:
    """The rows so far, written out after each step (a check cut short keeps what it measured), and the time
    budget."""

    def __init__(self, out: Path, device: torch.device, budget: float):
        self.out, self.device, self.budget = out, device, budget
        self.start = time.perf_counter()
        self.rows: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, name: str, step: Callable[[], None]) -> None:
        """Run ``step`` if there is time left; a step that fails gets a row saying so (its traceback in
        errors.log) and the check goes on: a lent GPU's minutes are not spent twice for one fault."""
        if self.elapsed() > self.budget:
            self.add({"step": name, "note": f"left out: the {self.budget:.0f} s budget was spent"})
            return
        print(f"[{self.elapsed():6.0f} s] {name}", file=sys.stderr, flush=True)
        try:
            step()
        except Exception as err:
            with open(self.out / "errors.log", "a") as log:
                log.write(f"--- {name}\n{traceback.format_exc()}\n")
            self.add({"step": name, "note": f"FAILED: {type(err).__name__}: {str(err).splitlines()[0][:200]} "
                                            "(errors.log)"})

    def add(self, row: dict) -> None:
        self.rows.append(row)
        (self.out / "gpu_check.json").write_text(json.dumps({"device": describe(self.device), "rows": self.rows},
                                                            indent=1))
        (self.out / "gpu_check.md").write_text(table(self.rows, self.device) + "\n")


def describe(device: torch.device) -> dict:
    about = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        about |= {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "cudnn_benchmark": torch.backends.cudnn.benchmark}
    return about


def table(rows: list[dict], device: torch.device) -> str:
    memory = "peak GPU MiB" if device.type == "cuda" else "peak MiB (resident set growth)"
    lines = [f"| step | seconds | ratio to the encoder pass | {memory} | note |", "|---|---|---|---|---|"]

    def number(value, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for r in rows:
        lines.append(f"| {r['step']} | {number(r.get('seconds'), 3)} | {number(r.get('ratio'), 2)} | "
                     f"{number(r.get('peak_mib'), 0)} | {r.get('note', '')} |")
    return "\n".join(lines)


def device_tests(check: Check) -> None:
    """The device fixture's CUDA cases, in a subprocess (its own log), before this process holds GPU memory."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"]
    t = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    (check.out / "tests.log").write_text(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    check.add({"step": "device tests (pytest -m cuda)", "seconds": time.perf_counter() - t,
               "note": f"{'ok' if done.returncode == 0 else 'FAILED'}: {summary} (tests.log)"})


def cost_cases(settings: dict, device: torch.device) -> list[dict]:
    base = {"device": str(device), "iters": settings["iters"]}
    cases = [{"edit": "swap", "preset": "default", "size": size, "photos": settings["photos"], **base}
             for size in settings["swap_sizes"]]
    cases += [{"edit": edit, "size": size, "photos": 0, **base} for edit in ("makeup", "stylize")
              for size in settings["sizes"]]
    cases += [{"edit": "invert", "size": size, "photos": 0, "resolution": resolution, "channel_base": channel_base,
               **base, "iters": settings["invert_iters"]} for size, resolution, channel_base in settings["invert"]]
    return cases


def cost_name(case: dict) -> str:
    return f"{case['edit']} {case['size']} px" + (f", {case['photos']} photos" if case["photos"] else "") + \
        (f", FFHQ-{case['resolution']} architecture" if case["edit"] == "invert" else "")


def cost_row(check: Check, case: dict, settings: dict) -> None:
    if case["edit"] == "swap":
        prepare_swap_targets(check.out, case["size"], TARGET_FOLDERS[:1], settings["photos"])
    r = measure(case, check.out, settings["repeats"])
    check.add({"step": cost_name(case), "seconds": r["iteration_s"], "ratio": r["ratio_iteration"],
               "peak_mib": r["edit_peak_mib"], "raw": r,
               "note": f"per iteration ({r['iters']}, {r['evals_per_iteration']:.2f} evaluations each); "
                       f"encoder pass {r['encoder_run_s']:.4f} s; set-up {r['setup_s']:.2f} s"})


def swap_run(check: Check, settings: dict, preset: str, name: str) -> None:
    """A swap as a user runs it, written to ``name``.png with its record."""
    from optimswap.edits.swap import SWAP
    from optimswap.features import load_encoder
    from optimswap.io import list_images
    from optimswap.runs import run_to_files

    cfg = SWAP.preset(preset).replace(device=check.device.type, **settings["run"])
    targets = list_images(TARGET_FOLDERS[0])[: settings["run_photos"]]
    output = check.out / f"{name}.png"
    base = reset_peak(check.device)
    record: dict = {}

    def run():
        record.update(run_to_files("swap", SOURCE, {"target": targets}, output, cfg, progress=False, overwrite=True))

    total = seconds(run, check.device)
    peak = peak_mib(check.device) - base
    bare = encoder_pass(load_encoder(cfg.encoder, check.device), cfg.size, [cfg.content_layer, *cfg.style_layers],
                        check.device)
    bare()
    encoder_s = statistics.median(seconds(bare, check.device) for _ in range(settings["repeats"]))
    timings = record.get("timings", {})
    check.add({"step": f"{name} swap ({preset} preset, {cfg.size} px, {len(targets)} photos)", "seconds": total,
               "ratio": total / encoder_s, "peak_mib": peak,
               "note": f"whole run; optimization {sum(v for k, v in timings.items() if k.endswith('optimize_s')):.1f}"
                       f" s; encoder pass {encoder_s:.4f} s; {output.name}"})


def tf32_row(check: Check, settings: dict) -> None:
    """The encoder pass on a face frame with TF32 convolutions against float32: time and relative differences."""
    from optimswap.edits.swap import SWAP
    from optimswap.face import find_face
    from optimswap.features import load_encoder
    from optimswap.io import read_image, to_tensor
    from optimswap.pipeline import make_frame

    cfg = SWAP.preset().replace(size=settings["tf32_size"])
    photo = read_image(SOURCE)
    image = make_frame(to_tensor(photo, check.device), find_face(photo), cfg, SWAP.mask).image
    encoder, layers = load_encoder(cfg.encoder, check.device), [cfg.content_layer, *cfg.style_layers]

    def features_and_gradient(tf32: bool) -> tuple[dict, torch.Tensor, float]:
        torch.backends.cudnn.allow_tf32 = tf32
        x = image.clone().requires_grad_(True)
        feats: dict[str, torch.Tensor] = {}

        def run():
            x.grad = None
            feats.update(encoder(x, layers))
            sum(f.square().mean() for f in feats.values()).backward()

        run()  # the warm-up, also cuDNN's algorithm search for this setting
        times = [seconds(run, check.device) for _ in range(max(settings["repeats"], 3))]
        return {k: v.detach() for k, v in feats.items()}, x.grad.detach().clone(), statistics.median(times)

    try:
        exact, exact_grad, exact_s = features_and_gradient(False)
        fast, fast_grad, fast_s = features_and_gradient(True)
    finally:
        torch.backends.cudnn.allow_tf32 = False

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    worst, gradient = max(relative(fast[k], exact[k]) for k in layers), relative(fast_grad, exact_grad)
    check.add({"step": f"encoder pass with TF32 convolutions ({cfg.size} px)", "seconds": fast_s,
               "ratio": fast_s / exact_s, "features_difference": worst, "gradient_difference": gradient,
               "note": f"ratio to the float32 pass; relative difference: features {worst:.2e} (worst layer), "
                       f"image gradient {gradient:.2e}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="small sizes and few iterations (seconds, for CI)")
    ap.add_argument("--budget", type=float, default=480.0,
                    help="seconds after which the remaining steps are left out (default leaves ~2 minutes of the "
                         "10 for the step running then)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "gpu_check")
    args = ap.parse_args()
    from optimswap.errors import OptimswapError
    from optimswap.pipeline import configure_device, resolve_device

    try:
        device = resolve_device(args.device)
    except OptimswapError as err:  # no GPU here: one line, not a traceback
        raise SystemExit(f"gpu_check: {err}") from None
    if not (FACES / "identities").is_dir():
        raise SystemExit(f"test photos not found in {FACES}: set OPTIMSWAP_FACES")
    configure_device(device, tf32=False)  # as a run sets it: cuDNN's algorithm search on, TF32 off
    args.out.mkdir(parents=True, exist_ok=True)
    settings = TINY if args.tiny else FULL
    check = Check(args.out, device, args.budget)
    print(json.dumps(describe(device)), flush=True)
    if device.type == "cuda":
        check.run("device tests", lambda: device_tests(check))
    else:
        check.add({"step": "device tests", "note": "CUDA only (on the CPU they are the suite's own)"})
    for case in cost_cases(settings, device):
        check.run(cost_name(case), lambda case=case: cost_row(check, case, settings))
    for preset, name in (("default", "demo"), ("quality", "quality")):
        check.run(f"{name} swap", lambda preset=preset, name=name: swap_run(check, settings, preset, name))
    check.run("TF32", lambda: tf32_row(check, settings))  # on the CPU a check of the step: the flag changes nothing
    print(table(check.rows, device))
    print(f"{check.elapsed():.0f} s; wrote {args.out / 'gpu_check.md'} and {args.out / 'gpu_check.json'}")
    if any("FAILED" in r.get("note", "") for r in check.rows):
        raise SystemExit("gpu_check: a step failed (see the table and errors.log)")


if __name__ == "__main__":
    main()
