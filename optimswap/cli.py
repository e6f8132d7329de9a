"""Command line. One command per registered edit (``optimswap swap``, ``optimswap makeup``, ...), its options
derived from the edit's config dataclass, plus ``demo``, ``eval``, ``ablate``, ``train-lighting``, ``fetch``; the
StyleGAN2 edit ``invert`` has two commands, ``invert`` (writes the latent) and ``edit`` (writes the edited photo), and
``directions`` makes the direction files ``edit --attr`` reads.

Exit codes: 0 success; 2 bad input or options (one line on stderr naming the file or option; for ``eval``:
some runs could not be scored, each row naming its record and the reason); 1 an internal
fault (one line; ``--debug`` shows the traceback); 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM).
Outputs are checked before any work starts; an interruption leaves a result and its record all old or all new.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from optimswap import __version__
from optimswap.config import LANDMARK_BACKENDS
from optimswap.errors import BackendUnavailable, OptimswapError, OptionError
from optimswap.io.image import check_outputs, check_writable
from optimswap.registry import Edit, edit_names, get_edit


def flag(option: str) -> str:
    """The command-line flag of a config field or library option name."""
    return "--" + option.replace("_", "-")


def config_options(config: type, skip: tuple[str, ...] = ()) -> list[click.Option]:
    """One option per config field but ``skip``, typed from the field (tuples as 'a+b+c'); all default to the
    preset's value."""
    hints = typing.get_type_hints(config)
    options = []
    for field in dataclasses.fields(config):
        if field.name in skip:
            continue
        kind, meta, name = hints[field.name], field.metadata, field.name.replace("_", "-")
        help_text = meta.get("help", "")
        if kind is bool:
            options.append(click.Option([f"--{name}/--no-{name}", field.name], default=None, help=help_text))
        elif meta.get("choices"):
            options.append(click.Option([f"--{name}", field.name], type=click.Choice(meta["choices"]), help=help_text))
        elif kind in (int, float):
            options.append(click.Option([f"--{name}", field.name], type=kind, help=help_text))
        else:  # str or tuple: parsed by the config so that grids and the command line read values alike
            options.append(click.Option([f"--{name}", field.name], type=str, help=help_text))
    return options


def resolve_config(edit: Edit, preset_name: str, values: dict[str, Any]) -> Any:
    """The edit's preset with the given option values (None = not given; text values parsed by the config)."""
    parsed = {k: edit.config.parse_value(k, v) if isinstance(v, str) else v for k, v in values.items() if v is not None}
    return edit.preset(preset_name, **parsed)


def _run_edit(edit: Edit, source: Path, inputs: dict[str, Any], output: Path, preset_name: str, face_index: int,
              overwrite: bool, quiet: bool, values: dict[str, Any]) -> None:
    from optimswap.runs import record_path, run_to_files

    cfg = resolve_config(edit, preset_name, values)
    record = run_to_files(edit.name, source, inputs, output, cfg, face_index, progress=not quiet, overwrite=overwrite,
                          extra={"preset": preset_name})
    used = record.get("targets_used")
    history = record["loss_history"]  # empty when nothing was optimized (a preview, a classic swap)
    click.echo(f"wrote {output} and {record_path(output)} in {record['timings']['total_s']:.1f} s"
               + (f"; final loss {history[-1]['total']:.4g}" if history else "")
               + (f"; targets used: {', '.join(Path(t['path']).name for t in used)}" if used else ""))


def run_options(edit: Edit, output_help: str = "Result picture (same pixel size as the photo); OUTPUT.json gets the "
                                              "run record.", skip: tuple[str, ...] = (),
                output_type: click.ParamType | None = None) -> list[click.Option]:
    """The options every edit command has (OUTPUT a picture file unless ``output_type`` says otherwise), then the
    edit's config options but ``skip``."""
    return [
        click.Option(["-o", "--output"], required=True,
                     type=output_type or click.Path(dir_okay=False, path_type=Path), help=output_help),
        click.Option(["--preset", "preset_name"], default="default", show_default=True,
                     type=click.Choice(list(edit.presets))),
        click.Option(["--face-index"], default=0, show_default=True, type=click.IntRange(min=0),
                     help="Which face of the photo (0 = largest)."),
        click.Option(["--overwrite"], is_flag=True, help="Replace an existing OUTPUT (never an input)."),
        click.Option(["-q", "--quiet"], is_flag=True,
                     help="No progress bars or step lines (warnings and errors stay)."),
        *config_options(edit.config, skip),
    ]


def edit_command(edit: Edit) -> click.Command:
    """``optimswap NAME PHOTO INPUT... -o OUT [options]`` for a registered edit."""
    arguments = [click.Argument([edit.source], type=click.Path(exists=True, dir_okay=False, path_type=Path))]
    # A photo set is a folder or several photo files; several only as the last argument, which then takes the rest.
    arguments += [click.Argument([i.name], nargs=-1 if i.kind == "photos" and i is edit.inputs[-1] else 1,
                                 required=True, type=click.Path(exists=True, dir_okay=i.kind == "photos",
                                                                path_type=Path))
                  for i in edit.inputs]

    def callback(output, preset_name, face_index, overwrite, quiet, **values):
        source = values.pop(edit.source)
        inputs = {i.name: _photo_set(values.pop(i.name)) for i in edit.inputs}
        _run_edit(edit, source, inputs, output, preset_name, face_index, overwrite, quiet, values)

    help_text = edit.summary + "\n\n" + "\n\n".join(f"{i.name.upper()}: {i.help}" for i in edit.inputs)
    return click.Command(edit.name, params=[*arguments, *run_options(edit)], callback=callback, help=help_text)


def _photo_set(value: Path | tuple[Path, ...]) -> Path | list[Path]:
    """A photo-set argument: one folder or photo as given, several photos as a list."""
    if not isinstance(value, tuple):
        return value
    return value[0] if len(value) == 1 and value[0].is_dir() else list(value)


class EditGroup(click.Group):
    """The fixed commands plus one command per registered edit."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *edit_names()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in edit_names():
            command = edit_command(get_edit(name))
        return command


@click.group(cls=EditGroup)
@click.version_option(__version__)
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def main(debug):
    """Face edits in single photos by per-image optimization."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # --debug also shows optimswap's own details and what native libraries log (see face.detect.native_logs_hidden)
    logging.getLogger("optimswap").setLevel(logging.DEBUG if debug else logging.NOTSET)


def _with_edit_options(edit: Edit) -> Callable:
    def decorate(f):
        f.__click_params__ = [*getattr(f, "__click_params__", []), *reversed(run_options(edit))]
        return f
    return decorate


@main.command("demo")
@click.option("--faces", type=click.Path(file_okay=False, path_type=Path), envvar="OPTIMSWAP_FACES",
              help="Local copy of the sample photos [env OPTIMSWAP_FACES]; without it they are downloaded.")
@click.option("--source-set", default="jennifer", show_default=True)
@click.option("--target-set", default="angelina", show_default=True)
@_with_edit_options(get_edit("swap"))
def demo_cmd(faces, source_set, target_set, output, preset_name, face_index, overwrite, quiet, **values):
    """Swap on the sample photos: the first photo of SOURCE_SET gets the identity of TARGET_SET."""
    from optimswap.data import fetch

    source = fetch(source_set, faces)[0]
    targets = fetch(target_set, faces)
    click.echo(f"demo: {source} <- {len(targets)} photos of {target_set}")
    _run_edit(get_edit("swap"), source, {"target": targets}, output, preset_name, face_index, overwrite, quiet, values)


def swap_video_command() -> click.Command:
    """``optimswap swap-video CLIP TARGET -o OUT``: the swap through a video or a folder of frames."""
    from optimswap.video import VideoConfig

    edit = get_edit("swap")
    video_fields = [f.name for f in dataclasses.fields(VideoConfig)]

    def callback(source, target, output, preset_name, face_index, overwrite, quiet, **values):
        from optimswap.runs import record_path
        from optimswap.video import run_clip

        video = VideoConfig(**{k: values.pop(k) for k in video_fields if values.get(k) is not None})
        for k in video_fields:
            values.pop(k, None)
        if values.get("landmark_tolerance") is None:
            # The pull-back warps each finished frame by what the detector reads in it, unlike its neighbours: on
            # talk_green (78 frames) flicker 1.07 with it, 0.72 without (NME 0.027 -> 0.032).
            values["landmark_tolerance"] = 0.0
        cfg = resolve_config(edit, preset_name, values)
        record = run_clip("swap", source, {"target": target}, output, cfg, video, face_index, progress=not quiet,
                          overwrite=overwrite, extra={"preset": preset_name})
        edited = sum(r["status"] == "edited" for r in record["frame_rows"])
        click.echo(f"wrote {output} and {record_path(record['output']).name}: "
                   f"{edited} of {record['video']['frames']} frames swapped, {len(record['skipped'])} passed through, "
                   f"{len(record['cuts'])} cut(s), {record['timings']['total_s']:.1f} s")

    params = [
        click.Argument(["source"], type=click.Path(exists=True, path_type=Path)),
        click.Argument(["target"], type=click.Path(exists=True, file_okay=False, path_type=Path)),
        *run_options(edit, "The swapped clip: a video (.mp4, .mkv, ...; same size, frame rate and length, the sound "
                           "copied) or a folder of PNG frames (a path ending in '/'); OUTPUT.json gets the record.",
                     output_type=click.Path(path_type=str)),
        *config_options(VideoConfig)]
    return click.Command("swap-video", params=params, callback=callback, help=(
        "Put the identity of the person photographed in TARGET onto the face through the clip SOURCE (a video file "
        "or a folder of frames), frame-coherently: the targets prepared once, landmarks tracked and smoothed, each "
        "frame warm-started from the one before with a temporal term, cuts restarting the chain; frames without a "
        "usable face pass through unchanged. An interrupted run resumes from OUTPUT.resume/.\n\n"
        "TARGET: Folder of photos of the target person."))


main.add_command(swap_video_command())


# The invert edit's options that only ``edit`` has: what to move, and a fitted latent to move instead of fitting one.
MOVE_OPTIONS = ("latent", "directions", "attr", "direction", "keep")


def _gan_command(name: str, callback: Callable, output_help: str, help_text: str) -> click.Command:
    """``invert`` or ``edit``: the photo, the invert edit's run and config options (``edit``: with the moves, each
    repeatable), and --save-generator."""
    edit = get_edit("invert")
    params: list[click.Parameter] = [
        click.Argument(["photo"], type=click.Path(exists=True, dir_okay=False, path_type=Path)),
        *run_options(edit, output_help, skip=MOVE_OPTIONS if name == "invert" else ("attr", "direction", "keep")),
        click.Option(["--save-generator"], is_flag=True,
                     help="Also write the generator that drew the result (with --pti-steps: the tuned one) as "
                          "OUTPUT.generator.pt, which --generator loads.")]
    if name == "edit":
        params += [
            click.Option(["--attr"], multiple=True, metavar="NAME=STRENGTH",
                         help="Move along the named direction of --directions, e.g. smile=+2 (repeatable)."),
            click.Option(["--direction"], multiple=True, metavar="FILE=STRENGTH",
                         help="Move along an external direction file (.npy / .pt, InterFaceGAN style; repeatable)."),
            click.Option(["--keep"], multiple=True, metavar="NAME",
                         help="Keep the attribute of this named direction: the moves are made orthogonal to it "
                              "(InterFaceGAN's conditional edit; repeatable).")]
    return click.Command(name, params=params, callback=callback, help=help_text)


def _run_gan(photo: Path, picture: Path, preset_name: str, face_index: int, overwrite: bool, quiet: bool,
             save_generator: bool, values: dict[str, Any], latent: bool) -> dict:
    """The invert edit, writing the picture, its record, and the latent (``latent``) and generator (on request)
    beside them."""
    from optimswap.gan.checkpoint import save_generator as write_generator
    from optimswap.gan.invert import save_latent
    from optimswap.runs import run_to_files

    def resolved(path: str) -> str:  # the record names the files the run read wherever it is read
        return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path

    values.update({k: resolved(values[k]) for k in ("generator", "latent", "directions") if values.get(k)})
    if values.get("direction"):
        values["direction"] = tuple(resolved(f) + "=" + s if f else d
                                    for d, (f, _, s) in ((d, d.rpartition("=")) for d in values["direction"]))
    cfg = resolve_config(get_edit("invert"), preset_name, values)
    attachments: dict[str, tuple[str, Callable[[Any, Path], object]]] = {}
    if latent:
        attachments["latent"] = (".pt", lambda result, path: save_latent(path, result.latent, result.noises,
                                                                         {"generator": cfg.generator}))
    if save_generator:
        attachments["tuned_generator"] = (".generator.pt", lambda result, path: write_generator(path, result.generator))
    return run_to_files("invert", photo, {}, picture, cfg, face_index, progress=not quiet, overwrite=overwrite,
                        extra={"preset": preset_name}, attachments=attachments)


def _done(record: dict, first: str) -> str:
    from optimswap.runs import record_path

    written = [first, *(record[k] for k in ("output", "tuned_generator") if k in record and record[k] != first)]
    history = record["loss_history"]
    return (f"wrote {', '.join(Path(p).name for p in written)} and {record_path(record['output']).name} in "
            f"{record['timings']['total_s']:.1f} s" + (f"; final loss {history[-1]['total']:.4g}" if history else ""))


def invert_cmd(photo, output, preset_name, face_index, overwrite, quiet, save_generator, **values):
    if output.suffix != ".pt":
        raise OptionError("output", f"{output}: the latent is written with torch.save; name it LATENT.pt")
    record = _run_gan(photo, output.with_suffix(".png"), preset_name, face_index, overwrite, quiet, save_generator,
                      values, latent=True)
    click.echo(_done(record, record["latent"]))


def edit_cmd(photo, output, preset_name, face_index, overwrite, quiet, save_generator, attr, direction, keep,
             **values):
    if not attr and not direction:
        raise OptionError("attr", "nothing to move: give --attr NAME=STRENGTH (with --directions FILE) or "
                                  "--direction FILE=STRENGTH")
    if (attr or keep) and not values.get("directions"):  # the library's error cannot name the command that helps
        from optimswap.gan.directions import parse_move

        names = [parse_move(a, "attr")[0] for a in attr] + list(keep)
        wanted = " ".join(f"--attr {n}" for n in dict.fromkeys(names))
        raise OptionError("directions", "named attributes need a file of named directions: make one with optimswap "
                                        f"directions fit --generator G {wanted} -o DIRS.pt (or directions sefa) and "
                                        "pass it here")
    values.update(attr=tuple(attr), direction=tuple(direction), keep=tuple(keep))
    record = _run_gan(photo, output, preset_name, face_index, overwrite, quiet, save_generator, values, latent=False)
    moves = ", ".join(f"{m['name']} {m['strength']:+g}" for m in record["moves"])
    click.echo(_done(record, record["output"]) + f"; moved {moves}")


main.add_command(_gan_command(
    "invert", invert_cmd, "The latent (.pt: latent and noise maps, for edit --latent); OUTPUT.png gets the "
                          "reconstruction pasted back into the photo, OUTPUT.json the run record.",
    "Fit a StyleGAN2 latent (W / W+) and noise maps to the photo's face, aligned as FFHQ (optionally tune the "
    "generator around it: --pti-steps). Weights: --generator ffhq-256 / ffhq-1024 (official NVlabs FFHQ, fetched "
    "when online) or a local .pkl / .pt."))
main.add_command(_gan_command(
    "edit", edit_cmd, "The edited photo (same pixel size); OUTPUT.json gets the run record with the resolved options "
                      "and moves.",
    "Edit the face's attributes with StyleGAN2: invert it (or take --latent LATENT.pt from optimswap invert), move "
    "the latent along directions (--attr NAME=STRENGTH from --directions DIRS.pt, made by optimswap directions; "
    "--direction FILE=STRENGTH), regenerate, and paste it back with colour matching and multi-band blending."))


@main.group("directions")
def directions_cmd():
    """Latent directions for edit --attr, written as one file of named directions (DIRS.pt)."""


def _directions_output(output: Path, generator: str, overwrite: bool) -> None:
    if output.suffix != ".pt":
        raise OptionError("output", f"{output}: directions are written with torch.save; name it DIRS.pt")
    if Path(generator).resolve() == output.resolve():
        raise OptionError("output", f"refusing to overwrite an input: {generator}")
    check_outputs([output], overwrite)


GENERATOR_HELP = "StyleGAN2 weights: NVlabs .pkl / rosinality .pt path, URL, or ffhq-256 / ffhq-1024."


@directions_cmd.command("sefa")
@click.option("-g", "--generator", required=True, help=GENERATOR_HELP)
@click.option("-k", "--count", default=10, show_default=True, type=click.IntRange(min=1),
              help="How many, by eigenvalue; named sefa0, sefa1, ...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
def sefa_cmd(generator, count, output, overwrite):
    """SeFa (Shen & Zhou 2021): directions in closed form, the top eigenvectors of the stacked style weights (no
    sampling, no labels; what each one does is found by looking)."""
    from optimswap.gan import load_generator
    from optimswap.gan.directions import save_directions, sefa
    from optimswap.io.image import write_files

    _directions_output(output, generator, overwrite)
    g = load_generator(generator)
    if count > g.arch.w_dim:
        raise OptionError("count", f"the generator's W has {g.arch.w_dim} dimensions, so at most that many directions")
    vectors, values = sefa(g, count)
    named = {f"sefa{i}": v for i, v in enumerate(vectors)}
    about = {"method": "sefa", "generator": generator, "eigenvalues": values.tolist()}
    write_files([(output, lambda tmp: save_directions(tmp, named, about))], overwrite)
    click.echo(f"wrote {output}: sefa0 ... sefa{count - 1}, eigenvalues {values[0]:.4g} ... {values[-1]:.4g}")


@directions_cmd.command("fit")
@click.option("-g", "--generator", required=True, help=GENERATOR_HELP)
@click.option("--attr", "attrs", multiple=True, required=True, metavar="NAME",
              help="Attribute scored offline from landmarks: smile, yaw, eyes_open (repeatable).")
@click.option("--samples", default=2000, show_default=True, type=click.IntRange(min=2),
              help="Generated images to score.")
@click.option("--share", default=0.3, show_default=True, type=click.FloatRange(0, 0.5, min_open=True),
              help="Top and bottom share of the scored images that are the two classes.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--landmarks", default="dlib", show_default=True, type=click.Choice(LANDMARK_BACKENDS))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def fit_cmd(generator, attrs, samples, share, seed, landmarks, device, output, overwrite, quiet):
    """InterFaceGAN-style directions (Shen et al. 2020, logistic regression): SAMPLES images drawn from random
    latents are scored by landmark ratios (mouth opening, pose, eye opening); the hyperplane between the top and the
    bottom SHARE of the images with a face found gives each attribute's direction."""
    from optimswap.gan import load_generator, scorers
    from optimswap.gan.directions import fit_from_scores, sample_and_score, save_directions
    from optimswap.io.image import write_files
    from optimswap.pipeline import resolve_device

    attrs = tuple(dict.fromkeys(attrs))
    scorers.check_attributes(attrs)
    _directions_output(output, generator, overwrite)
    g = load_generator(generator, resolve_device(device))
    w, scores = sample_and_score(g, scorers.landmark_scorer(attrs, landmarks), samples, seed, progress=not quiet)
    named, scored = {}, {}
    for i, name in enumerate(attrs):
        named[name] = fit_from_scores(w, scores[:, i], share)
        scored[name] = int(scores[:, i].isfinite().sum())
    about = {"method": "fit", "generator": generator, "samples": samples, "share": share, "seed": seed,
             "landmarks": landmarks, "scored": scored}
    write_files([(output, lambda tmp: save_directions(tmp, named, about))], overwrite)
    click.echo(f"wrote {output}: " + ", ".join(f"{n} ({scored[n]} of {samples} images scored)" for n in attrs))


@main.command("eval")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--identities", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of identity folders for ID retrieval (default: the folders beside each target folder).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of the table (a .json twin is written beside it).")
def eval_cmd(runs, identities, output):
    """Score finished runs from their OUT.json records (files, or folders searched recursively).

    A run that cannot be scored (a malformed record, a missing or mismatched picture, no face in the output) gets
    a row whose error column names the record and the reason; the others are scored. Exit code 0 when every run
    was scored, 2 when some were not (their rows say why)."""
    from optimswap.eval.report import evaluate_runs, find_records, format_table, write_rows

    if output:  # before the scoring, which can take long
        if output.suffix.lower() == ".json":
            raise OptionError("output", f"{output}: the table is a CSV with a .json twin beside it; name it .csv")
        for path in (output, output.with_suffix(".json")):
            check_writable(path)
    records = find_records(list(runs))
    if not records:
        raise OptionError("runs", "no run records (OUT.json of an edit) found in the given paths")
    rows = evaluate_runs(records, identities)
    click.echo(format_table(rows))
    if output:
        write_rows(rows, output)
        click.echo(f"wrote {output} and {output.with_suffix('.json')}")
    failed = [r for r in rows if r.get("error")]
    if failed:
        click.echo(f"error: {len(failed)} of {len(rows)} run(s) could not be fully scored (see the error column)",
                   err=True)
        sys.exit(2)


@main.command("ablate")
@click.option("--edit", "edit_name", default="swap", show_default=True, type=click.Choice(edit_names()))
@click.option("--pairs", "pairs_csv", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with a source column and one per input of the edit (swap: target; makeup: reference).")
@click.option("--grid", "grid_specs", multiple=True, metavar="OPTION=V1,V2",
              help="Values of one option, e.g. style=40,80 tv=0,1 method=full,paste layers=relu3_1+relu4_1 "
                   "(repeatable).")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", "preset_name", default="default", show_default=True)
@click.option("--executor", default="local", show_default=True, type=click.Choice(["local", "submitit"]),
              help="local process pool, or submitit (Slurm when present, else its local mode).")
@click.option("--cluster", type=click.Choice(["slurm", "local", "debug"]), help="submitit cluster (default: detect).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs at a time (local pool / CPU share per job).")
@click.option("-q", "--quiet", is_flag=True)
def ablate_cmd(edit_name, pairs_csv, grid_specs, out, preset_name, executor, cluster, workers, quiet):
    """Sweep options of an edit over pairs; resumes (finished runs are kept); writes summary.csv,
    contact_sheet.png, plots."""
    from optimswap.ablate import parse_grid, read_pairs, sweep

    runs = sweep(read_pairs(pairs_csv, edit_name), parse_grid(list(grid_specs), edit_name), out, preset_name,
                 executor, workers, cluster, progress=not quiet, edit=edit_name)
    click.echo(f"{len(runs)} runs in {out}: summary.csv, contact_sheet.png, plot_*.png")


@main.command("train-lighting")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Weights file (default: the one shipped in the package); a .json report goes beside it.")
@click.option("--faces", type=click.Path(exists=True, file_okay=False, path_type=Path), envvar="OPTIMSWAP_FACES",
              required=True, help="Faces folder with identities/ and makeup/ [env OPTIMSWAP_FACES].")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps (batches of pairs).")
@click.option("--seed", type=click.IntRange(min=0))
@click.option("--overwrite", is_flag=True, help="Replace existing weights.")
@click.option("-q", "--quiet", is_flag=True)
def train_lighting_cmd(output, faces, steps, seed, overwrite, quiet):
    """Train the lighting network on synthetic relit pairs; prints held-out accuracy and confusion matrix."""
    from optimswap.data import faces_dir
    from optimswap.lighting.net import WEIGHTS
    from optimswap.lighting.train import TrainConfig, train

    output = output or WEIGHTS
    check_outputs([output, output.with_suffix(".json")], overwrite)
    cfg = dataclasses.replace(TrainConfig(),
                              **{k: v for k, v in {"steps": steps, "seed": seed}.items() if v is not None})
    root = faces_dir(faces)
    if root is None:  # not reached: --faces is required
        raise OptionError("faces", "a faces folder is required")
    report = train(root, cfg, output, progress=not quiet)
    for split in ("train_pairs_fresh", "held_out_people"):
        r = report[split]
        click.echo(f"{split}: accuracy {r['accuracy']:.3f} on {r['pairs']} pairs; confusion "
                   f"[true same: {r['confusion'][0]}, true different: {r['confusion'][1]}] (predicted same, different)")
    click.echo(f"wrote {output} and {output.with_suffix('.json')}")


@main.command("fetch")
@click.argument("name")
@click.option("--faces", type=click.Path(file_okay=False, path_type=Path), envvar="OPTIMSWAP_FACES",
              help="Local copy of the sample photos [env OPTIMSWAP_FACES]; without it they are downloaded.")
def fetch_cmd(name, faces):
    """Fetch a sample set (a person) into the cache and print its paths."""
    from optimswap.data import fetch

    for p in fetch(name, faces):
        click.echo(p)


def error_line(err: OptimswapError) -> str:
    """One line for the user: the command-line option (or file) and the reason."""
    option = err.option if isinstance(err, (OptionError, BackendUnavailable)) else None
    reason = err.reason if isinstance(err, OptionError) else str(err)
    return f"error: {flag(option)}: {reason}" if option else f"error: {reason}"


class Terminated(BaseException):
    """SIGTERM as an exception, so that cleanup runs as for Ctrl-C (a BaseException: no ``except Exception``
    takes it for a failure)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run() -> None:
    debug = "--debug" in sys.argv[1:]
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(128 + signal.SIGTERM)
    except click.ClickException as err:  # click's usage text is several lines; the reason fits on one
        hint = f" (see {err.ctx.command_path} --help)" if isinstance(err, click.UsageError) and err.ctx else ""
        click.echo(f"error: {err.format_message()}{hint}", err=True)
        sys.exit(err.exit_code)
    except OptimswapError as err:
        if debug:
            raise
        click.echo(error_line(err), err=True)
        sys.exit(2)
    except Exception as err:
        if debug:
            raise
        click.echo(f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)", err=True)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)  # run() in a test or an embedding program leaves no trace


if __name__ == "__main__":
    run()
