"""Loss-weight / layer / method sweeps of any edit over (photo, inputs) pairs, resumable, on a local process pool
or submitit (Slurm, or its local mode), with a summary CSV joined with the eval metrics, a contact sheet and plots.

Layout of a sweep folder: ``OUT/<pair>/<setting>/out.png`` + ``out.json`` (the run record; the two are placed
together, the record first: a folder with both is finished and never redone) + ``eval.json`` (its metrics);
``OUT/summary.csv``, ``OUT/contact_sheet.png``, ``OUT/plot_<option>.png``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from optimswap.data import faces_dir
from optimswap.errors import BackendUnavailable, ImageError, OptionError
from optimswap.io import write_json
from optimswap.io.image import check_writable
from optimswap.registry import Edit, get_edit

log = logging.getLogger(__name__)
EXECUTORS = ("local", "submitit")


def parse_grid(specs: list[str], edit: str | Edit = "swap") -> dict[str, list]:
    """``["style=40,80", "tv=0,1e-3"]`` -> ``{"style_weight": [40.0, 80.0], "tv_weight": [0.0, 0.001]}`` (option
    names, aliases and value types of ``edit``'s config)."""
    config = get_edit(edit).config
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise OptionError("grid", f"bad entry {spec!r}: use OPTION=V1,V2")
        name = config.resolve_name(key)
        grid[name] = [config.parse_value(name, v) for v in values.split(",")]
    return grid


@dataclass(frozen=True)
class Pair:
    name: str
    source: Path
    inputs: dict[str, Path]


def _resolve(text: str, base: Path) -> Path:
    if text.startswith("faces:"):
        faces = faces_dir()
        if faces is None:
            raise OptionError("pairs", f"{text}: the faces: prefix needs OPTIMSWAP_FACES (a local faces folder)")
        return faces / text[len("faces:"):]
    path = Path(text)
    return path if path.is_absolute() else base / path


def read_pairs(csv_path: Path, edit: str | Edit = "swap") -> list[Pair]:
    """CSV with a ``source`` column, one column per input of ``edit`` (swap: ``target``; makeup: ``reference``)
    and an optional ``name``; relative paths are relative to the CSV, ``faces:`` to $OPTIMSWAP_FACES."""
    edit = get_edit(edit)
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["source", *(i.name for i in edit.inputs)]
    if not rows or not set(columns) <= set(rows[0]):
        raise OptionError("pairs", f"{csv_path}: needs a header with columns {','.join(columns)} and at least one row")
    pairs = []
    for row in rows:
        source = _resolve(row["source"], csv_path.parent)
        inputs = {i.name: _resolve(row[i.name], csv_path.parent) for i in edit.inputs}
        if not source.is_file():
            raise ImageError(f"{csv_path}: {source} is not a photo")
        for spec in edit.inputs:
            if not (inputs[spec.name].is_dir() if spec.kind == "photos" else inputs[spec.name].is_file()):
                raise ImageError(f"{csv_path}: {inputs[spec.name]} is not a "
                                 f"{'folder of photos' if spec.kind == 'photos' else 'photo'}")
        first = inputs[edit.inputs[0].name] if edit.inputs else source
        name = row.get("name") or f"{source.parent.name}_{source.stem}-{first.stem if first.is_file() else first.name}"
        pairs.append(Pair(name, source, inputs))
    return pairs


def setting_name(settings: dict, edit: str | Edit = "swap") -> str:
    """Folder name of a setting: ``style=40_tv=0.001`` (short option names, tuples joined by '+')."""
    config = get_edit(edit).config

    def fmt(v):
        return "+".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)

    return "_".join(f"{config.short_name(k)}={fmt(v)}" for k, v in settings.items()) or "base"


@dataclass(frozen=True)
class Run:
    edit: str
    pair: Pair
    settings: dict
    folder: Path

    @property
    def output(self) -> Path:
        return self.folder / "out.png"

    @property
    def record(self) -> Path:
        return self.folder / "out.json"

    def done(self) -> bool:
        try:  # the picture too: only SIGKILL can fall between the record's placing and the picture's
            return json.loads(self.record.read_text()).get("edit") == self.edit and self.output.is_file()
        except (OSError, json.JSONDecodeError, AttributeError):
            return False


def plan(pairs: list[Pair], grid: dict[str, list], out: Path, edit: str | Edit = "swap") -> list[Run]:
    """Every pair x every combination of the grid (in the order given)."""
    name = get_edit(edit).name
    keys = list(grid)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    return [Run(name, p, c, Path(out) / p.name / setting_name(c, name)) for p in pairs for c in combos]


def execute(spec: dict) -> str:
    """Run one edit and score it (in a worker process); returns the record path. Module-level so it pickles."""
    import torch

    from optimswap.eval.report import evaluate_runs
    from optimswap.runs import run_to_files

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cfg = get_edit(spec["edit"]).preset(spec["preset"], **spec["settings"])
    output = Path(spec["output"])
    # No record = not finished: a picture left by an interrupted run is replaced.
    run_to_files(spec["edit"], Path(spec["source"]), {k: Path(v) for k, v in spec["inputs"].items()}, output, cfg,
                 progress=False, overwrite=True, extra={"preset": spec["preset"], "settings": spec["settings"]})
    row = evaluate_runs([output.with_suffix(".json")])[0]
    write_json(output.parent / "eval.json", row)
    return str(output.with_suffix(".json"))


def _exit_on_sigterm() -> None:
    """A worker's SIGTERM unwinds like Ctrl-C, so a run being written removes its temp files."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _submit_local(specs: list[dict], workers: int):
    # spawn: no forked torch/OpenMP state; one run per process so peak memory is that run's own.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1,
                               initializer=_exit_on_sigterm)
    with pool:
        futures = {pool.submit(execute, s): s for s in specs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.exception()
        except BaseException:  # interrupted: the runs not yet handed to a worker are not started
            pool.shutdown(cancel_futures=True)
            raise


def _submit_submitit(specs: list[dict], folder: Path, cluster: str | None, workers: int):
    try:
        import submitit
    except ImportError as err:
        raise BackendUnavailable("the submitit executor needs: pip install 'optimswap[cluster]'",
                                 option="executor") from err
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(timeout_min=120, cpus_per_task=threads_per_run(workers))
    jobs = [(executor.submit(execute, s), s) for s in specs]
    for job, spec in jobs:
        try:
            job.result()
            yield spec, None
        except Exception as err:  # a failed job is reported, the sweep goes on
            yield spec, err


def threads_per_run(workers: int) -> int:
    """Torch threads of each run when ``workers`` run side by side: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // workers)


def sweep(pairs: list[Pair], grid: dict[str, list], out: Path, preset_name: str = "default", executor: str = "local",
          workers: int = 1, cluster: str | None = None, progress: bool = True, edit: str | Edit = "swap") -> list[Run]:
    """Run every planned run that has no record yet, then write the summary; returns all planned runs."""
    if executor not in EXECUTORS:
        raise OptionError("executor", f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if workers < 1:
        raise OptionError("workers", f"must be >= 1, got {workers}")
    edit = get_edit(edit)
    out = Path(out)
    check_writable(out, folder=True)
    runs = plan(pairs, grid, out, edit)
    for run in runs:
        edit.preset(preset_name, **run.settings)  # invalid combinations fail now, not in a worker
    todo = [r for r in runs if not r.done()]
    if len(todo) < len(runs):
        log.warning("%d of %d runs already finished; running the other %d", len(runs) - len(todo), len(runs), len(todo))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", {"edit": edit.name, "preset": preset_name, "grid": grid, "executor": executor,
                                     "workers": workers, "pairs": [dataclasses.asdict(p) for p in pairs]})
    specs = [{"edit": edit.name, "preset": preset_name, "settings": r.settings, "source": str(r.pair.source),
              "inputs": {k: str(v) for k, v in r.pair.inputs.items()}, "output": str(r.output),
              "threads": threads_per_run(workers)} for r in todo]
    results = (_submit_local(specs, workers) if executor == "local"
               else _submit_submitit(specs, out / "submitit", cluster, workers))
    failures = 0
    with contextlib.closing(results):  # an interruption anywhere in the loop stops the executor at once
        for spec, error in tqdm(results, total=len(specs), desc="sweep", disable=not progress, unit="run"):
            if error is not None:
                failures += 1
                log.error("run %s failed: %s", spec["output"], error)
                Path(spec["output"]).parent.mkdir(parents=True, exist_ok=True)
                (Path(spec["output"]).parent / "error.txt").write_text(f"{type(error).__name__}: {error}\n")
    summarize(runs, out, edit)
    if failures:
        raise RuntimeError(f"{failures} of {len(specs)} run(s) failed; see error.txt in their folders")
    return runs


def summarize(runs: list[Run], out: Path, edit: str | Edit = "swap") -> list[dict]:
    """summary.csv (settings joined with eval metrics, one row per run), contact_sheet.png, plot_<option>.png."""
    from optimswap.eval.plots import contact_sheet, metric_plots
    from optimswap.eval.report import write_rows

    rows, cells = [], {}
    options = list(dict.fromkeys(k for r in runs for k in r.settings))
    swept = [k for k in options if len({repr(r.settings.get(k)) for r in runs}) > 1]

    config = get_edit(edit).config

    def label(run):  # contact-sheet column: only the options that vary
        return setting_name({k: run.settings[k] for k in swept if k in run.settings}, edit)

    columns = ["source", *dict.fromkeys(label(r) for r in runs)]
    for run in runs:
        row = {"pair": run.pair.name, "setting": setting_name(run.settings, edit), **run.settings}
        eval_path = run.folder / "eval.json"
        if run.done() and eval_path.is_file():
            row.update(json.loads(eval_path.read_text()))
            box = json.loads(run.record.read_text())["source_face_box"]
            cells[(run.pair.name, label(run))] = (run.output, box)
            cells.setdefault((run.pair.name, "source"), (run.pair.source, box))
        else:
            error_file = run.folder / "error.txt"
            row["error"] = error_file.read_text().strip() if error_file.is_file() else "not run"
        rows.append(row)
    write_rows(rows, out / "summary.csv", lead=["pair", "setting", *options])
    contact_sheet(cells, list(dict.fromkeys(r.pair.name for r in runs)), columns, out / "contact_sheet.png")
    for option in swept:
        metric_plots([r for r in rows if not r.get("error")], option, out / f"plot_{config.short_name(option)}.png")
    return rows
