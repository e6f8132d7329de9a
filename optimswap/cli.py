"""Command line: ``optimswap swap``, ``demo``, ``eval``, ``ablate``, ``fetch``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from optimswap import __version__
from optimswap.config import COLOR_SPACES, METHODS, PRESETS, preset
from optimswap.face import BackendUnavailable
from optimswap.io import ImageError


def _swap_options(f):
    opts = [
        click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Result picture (same pixel size as SOURCE); OUTPUT.json gets the run record."),
        click.option("--preset", "preset_name", default="default", show_default=True, type=click.Choice(sorted(PRESETS))),
        click.option("--method", type=click.Choice(METHODS),
                     help="full (default) or a baseline: paste (warped mean of the targets), global (CNNMRF search)."),
        click.option("--size", type=int, help="Working frame side in pixels."),
        click.option("--levels", type=int, help="Pyramid levels."),
        click.option("--iters", type=int, help="L-BFGS iterations per level."),
        click.option("--seed", type=int),
        click.option("--device", type=str, help="auto, cpu, cuda, cuda:1 ..."),
        click.option("--encoder", type=click.Choice(["vgg16-hed", "vgg19"]), help="vgg16-hed is offline; vgg19 downloads."),
        click.option("--landmarks", type=click.Choice(["dlib", "fan", "mediapipe"]),
                     help="dlib and mediapipe are offline; fan downloads."),
        click.option("--n-targets", type=int, help="Use the N target photos whose landmark shape is closest."),
        click.option("--content-weight", type=float),
        click.option("--style-weight", type=float),
        click.option("--tv-weight", type=float),
        click.option("--lighting-weight", type=float, help="Keep the source's lighting (0 = off)."),
        click.option("--warp-strength", type=float, help="TPS warp of targets to the source's landmarks (0..1)."),
        click.option("--face-index", default=0, show_default=True, help="Which source face (0 = largest)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT (never an input)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _run_swap(source: Path, targets: list[Path] | Path, output: Path, preset_name: str, face_index: int,
              overwrite: bool, quiet: bool, **overrides) -> None:
    from optimswap.runs import record_path, run_swap

    cfg = preset(preset_name, **overrides)
    record = run_swap(source, targets, output, cfg, face_index, progress=not quiet, overwrite=overwrite,
                      extra={"preset": preset_name})
    click.echo(f"wrote {output} and {record_path(output)} in {record['timings']['total_s']:.1f} s; "
               f"final loss {record['loss_history'][-1]['total']:.4g}; "
               f"targets used: {', '.join(Path(t['path']).name for t in record['targets_used'])}")


@click.group()
@click.version_option(__version__)
def main():
    """Face edits in single photos by per-image optimization."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


@main.command("swap")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_swap_options
def swap_cmd(source, target_dir, output, preset_name, face_index, overwrite, quiet, **overrides):
    """Put the identity of the person photographed in TARGET_DIR onto the face in SOURCE."""
    _run_swap(source, target_dir, output, preset_name, face_index, overwrite, quiet, **overrides)


@main.command("demo")
@click.option("--source-set", default="jennifer", show_default=True)
@click.option("--target-set", default="angelina", show_default=True)
@_swap_options
def demo_cmd(source_set, target_set, output, preset_name, face_index, overwrite, quiet, **overrides):
    """Swap on the sample photos of reference_faces/ (first photo of SOURCE_SET onto TARGET_SET's identity)."""
    from optimswap.data import fetch

    source = fetch(source_set)[0]
    targets = fetch(target_set)
    click.echo(f"demo: {source} <- {len(targets)} photos of {target_set}")
    _run_swap(source, targets, output, preset_name, face_index, overwrite, quiet, **overrides)


@main.command("makeup")
@click.argument("plain", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--degree", type=click.FloatRange(0, 1), help="0 = the input, 1 = full makeup (IPM-Net).")
@click.option("--regions", help="Comma-separated subset of lips,eyes,skin.")
@click.option("--color-space", type=click.Choice(COLOR_SPACES), help="Histograms matched per CIELAB or RGB channel.")
@click.option("--makeup-weight", type=float, help="Scale of the histogram losses against the content loss.")
@click.option("--preset", "preset_name", default="makeup", show_default=True, type=click.Choice(sorted(PRESETS)))
@click.option("--size", type=int)
@click.option("--iters", type=int)
@click.option("--seed", type=int)
@click.option("--device", type=str)
@click.option("--face-index", default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def makeup_cmd(plain, reference, output, degree, regions, color_space, makeup_weight, preset_name, size, iters, seed,
               device, face_index, overwrite, quiet):
    """Apply the makeup of the portrait REFERENCE to the face in PLAIN (outside the makeup regions: unchanged)."""
    from optimswap.runs import record_path, run_makeup

    overrides = dict(makeup_degree=degree, makeup_color_space=color_space, makeup_weight=makeup_weight, size=size,
                     iters=iters, seed=seed, device=device)
    if regions:
        chosen = tuple(r.strip() for r in regions.split(","))
        base_cfg = preset(preset_name)
        base = dict(zip(base_cfg.makeup_regions, base_cfg.makeup_region_weights))
        overrides.update(makeup_regions=chosen, makeup_region_weights=tuple(base.get(r, 1.0) for r in chosen))
    cfg = preset(preset_name, **overrides)
    record = run_makeup(plain, reference, output, cfg, face_index, progress=not quiet, overwrite=overwrite)
    click.echo(f"wrote {output} and {record_path(output)} in {record['timings']['total_s']:.1f} s")


@main.command("eval")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--identities", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of identity folders for ID retrieval (default: the folders beside each target folder).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of the table (a .json twin is written beside it).")
def eval_cmd(runs, identities, output):
    """Score swaps and makeup runs from their OUT.json records (files, or folders searched recursively)."""
    from optimswap.eval.report import evaluate_runs, find_records, format_table, write_rows

    records = find_records(list(runs))
    if not records:
        raise click.UsageError("no run records (OUT.json of a swap or makeup) found in the given paths")
    rows = evaluate_runs(records, identities)
    click.echo(format_table(rows))
    if output:
        write_rows(rows, output)
        click.echo(f"wrote {output} and {output.with_suffix('.json')}")
    failed = [r for r in rows if r.get("error")]
    if failed:
        click.echo(f"{len(failed)} of {len(rows)} run(s) could not be fully scored (see the error column)", err=True)


@main.command("ablate")
@click.option("--pairs", "pairs_csv", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with source,target[,name] columns (reference_faces/pairs.csv is an example).")
@click.option("--grid", "grid_specs", multiple=True, metavar="OPTION=V1,V2",
              help="Values of one option, e.g. style=40,80 tv=0,1 method=full,paste layers=relu3_1+relu4_1 (repeatable).")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", "preset_name", default="default", show_default=True, type=click.Choice(sorted(PRESETS)))
@click.option("--executor", default="local", show_default=True, type=click.Choice(["local", "submitit"]),
              help="local process pool, or submitit (Slurm when present, else its local mode).")
@click.option("--cluster", type=click.Choice(["slurm", "local", "debug"]), help="submitit cluster (default: detect).")
@click.option("--workers", default=1, show_default=True, help="Runs at a time (local pool / CPU share per job).")
@click.option("-q", "--quiet", is_flag=True)
def ablate_cmd(pairs_csv, grid_specs, out, preset_name, executor, cluster, workers, quiet):
    """Sweep options over pairs; resumes (finished runs are kept); writes summary.csv, contact_sheet.png, plots."""
    from optimswap.ablate import parse_grid, read_pairs, sweep

    runs = sweep(read_pairs(pairs_csv), parse_grid(list(grid_specs)), out, preset_name, executor, workers, cluster,
                 progress=not quiet)
    click.echo(f"{len(runs)} runs in {out}: summary.csv, contact_sheet.png, plot_*.png")


@main.command("train-lighting")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Weights file (default: the one shipped in the package); a .json report goes beside it.")
@click.option("--faces", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Faces folder with identities/ and makeup/ (default: $OPTIMSWAP_FACES or ../shared/faces).")
@click.option("--steps", type=int, help="Training steps (batches of pairs).")
@click.option("--seed", type=int)
@click.option("--overwrite", is_flag=True, help="Replace existing weights.")
@click.option("-q", "--quiet", is_flag=True)
def train_lighting_cmd(output, faces, steps, seed, overwrite, quiet):
    """Train the lighting network on synthetic relit pairs; prints held-out accuracy and confusion matrix."""
    import dataclasses

    from optimswap.data import local_faces_dir
    from optimswap.lighting.net import WEIGHTS
    from optimswap.lighting.train import TrainConfig, train

    output = output or WEIGHTS
    if output.exists() and not overwrite:
        raise click.UsageError(f"{output} exists; pass --overwrite to replace it")
    root = faces or local_faces_dir()
    if root is None:
        raise click.UsageError("no faces folder: pass --faces or set OPTIMSWAP_FACES")
    cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in {"steps": steps, "seed": seed}.items() if v is not None})
    report = train(root, cfg, output, progress=not quiet)
    for split in ("train_pairs_fresh", "held_out_people"):
        r = report[split]
        click.echo(f"{split}: accuracy {r['accuracy']:.3f} on {r['pairs']} pairs; confusion "
                   f"[true same: {r['confusion'][0]}, true different: {r['confusion'][1]}] (predicted same, different)")
    click.echo(f"wrote {output} and {output.with_suffix('.json')}")


@main.command("fetch")
@click.argument("name")
def fetch_cmd(name):
    """Fetch a sample set (a person) into the cache and print its paths."""
    from optimswap.data import fetch

    for p in fetch(name):
        click.echo(p)


def run():
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (ImageError, BackendUnavailable, ValueError, RuntimeError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
