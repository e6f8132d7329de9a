"""Command line: ``optimswap swap``, ``optimswap demo``, ``optimswap fetch``."""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path

import click
import torch

from optimswap import __version__
from optimswap.config import PRESETS, preset
from optimswap.face import BackendUnavailable
from optimswap.io import ImageError, write_image, write_json

def _swap_options(f):
    opts = [
        click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Result picture (same pixel size as SOURCE); OUTPUT.json gets the run record."),
        click.option("--preset", "preset_name", default="default", show_default=True, type=click.Choice(sorted(PRESETS))),
        click.option("--size", type=int, help="Working frame side in pixels."),
        click.option("--levels", type=int, help="Pyramid levels."),
        click.option("--iters", type=int, help="L-BFGS iterations per level."),
        click.option("--seed", type=int),
        click.option("--device", type=str, help="auto, cpu, cuda, cuda:1 ..."),
        click.option("--encoder", type=click.Choice(["vgg16-hed", "vgg19"]), help="vgg16-hed is offline; vgg19 downloads."),
        click.option("--landmarks", type=click.Choice(["dlib", "fan"]), help="dlib is offline; fan downloads."),
        click.option("--n-targets", type=int, help="Use the N target photos whose landmark shape is closest."),
        click.option("--content-weight", type=float),
        click.option("--style-weight", type=float),
        click.option("--tv-weight", type=float),
        click.option("--warp-strength", type=float, help="TPS warp of targets to the source's landmarks (0..1)."),
        click.option("--face-index", default=0, show_default=True, help="Which source face (0 = largest)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT (never an input)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    out = output.resolve()
    for p in inputs:
        if Path(p).resolve() == out or Path(p).resolve() == out.with_suffix(".json"):
            raise click.UsageError(f"refusing to overwrite an input: {p}")
    for p in (out, out.with_suffix(".json")):
        if p.exists() and not overwrite:
            raise click.UsageError(f"{p} exists; pass --overwrite to replace it")


def _run_swap(source: Path, targets: list[Path] | Path, output: Path, preset_name: str, face_index: int,
              overwrite: bool, quiet: bool, **overrides) -> None:
    from optimswap.swap import list_images, swap

    target_paths = list_images(targets)
    _check_output(output, [source, *target_paths], overwrite)
    cfg = preset(preset_name, **overrides)
    result = swap(source, target_paths, cfg, face_index=face_index, progress=not quiet)
    write_image(output, result.image)
    record = {
        "optimswap": __version__, "command": "swap", "source": str(source), "output": str(output),
        "preset": preset_name, "options": cfg.to_dict(), "face_index": face_index,
        "source_face_box": result.source_face.box, "targets_used": result.targets.used,
        "targets_skipped": result.targets.skipped, "timings": result.timings, "loss_history": result.history,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": str(result.frame_result.device)},
    }
    write_json(output.with_suffix(".json"), record)
    final = result.history[-1]
    click.echo(f"wrote {output} and {output.with_suffix('.json')} in {result.timings['total_s']:.1f} s; "
               f"final loss {final['total']:.4g}; targets used: {', '.join(Path(t['path']).name for t in result.targets.used)}")


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
