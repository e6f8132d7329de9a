"""The bad-input corpus of issue #12, made by code from the shared test photos (nothing downloaded), and the
cases that run every command against it; with what a real user meets besides (issue #37): a full disk, a JPEG
output, devices this machine lacks, a killed writer's temp files, a bad $OPTIMSWAP_DATA, MediaPipe's native logs,
several target photos, inputs outside what a method can do, a copied run folder.

``python tests/bad_inputs.py [OUT_DIR]`` builds the corpus, runs every case through the command line in this
process and prints the table (case, command, exit code, message) that the issue's closing note shows;
``tests/test_bad_inputs.py`` runs the same cases and asserts what each must give.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

# A tiny run: the point is what happens around the optimization, not its result.
TINY = ["--size", "64", "--levels", "1", "--iters", "2", "-q"]
SWAP_TINY = [*TINY, "--n-targets", "2"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 20000) -> None:
    """A PNG whose header claims side x side pixels (a decompression bomb); only its first row has data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    data = zlib.compress(b"\x00" + b"\x00" * side)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
                     + _png_chunk(b"IEND", b""))


def _with_orientation(image: Image.Image, orientation: int, path: Path) -> None:
    """Save ``image`` stored so that EXIF ``orientation`` (6 or 8) turns it upright again."""
    stored = image.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=95)


def build_corpus(root: Path, faces: Path) -> dict[str, Path]:
    """Write every bad or odd input under ``root``; returns them by case name."""
    import tiny_gan

    from optimswap.gan.directions import save_directions

    root.mkdir(parents=True, exist_ok=True)
    people = faces / "identities"
    face = Image.open(people / "mark" / "01.jpg").convert("RGB")
    face = face.resize((400, round(400 * face.height / face.width)), Image.LANCZOS)
    grey = np.asarray(face.convert("L"))
    c: dict[str, Path] = {}

    def put(name: str, write: Callable[[Path], None]) -> None:
        c[name] = root / name
        write(c[name])

    put("face.jpg", lambda p: face.save(p, quality=95))
    put("grey16.png", lambda p: Image.fromarray(grey.astype(np.uint16) * 257).save(p))
    put("rgb48.png", lambda p: _save_rgb48(np.asarray(face), p))
    put("grey.png", lambda p: face.convert("L").save(p))
    put("cmyk.jpg", lambda p: face.convert("CMYK").save(p, quality=95))
    put("palette_alpha.png", lambda p: face.convert("P", palette=Image.Palette.ADAPTIVE).save(p, transparency=0))
    put("exif6.jpg", lambda p: _with_orientation(face, 6, p))
    put("exif8.jpg", lambda p: _with_orientation(face, 8, p))
    put("fäce ü.jpg", lambda p: face.save(p, quality=95))
    put("no_face.png", lambda p: Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))).save(p))
    put("three_faces.jpg", lambda p: _side_by_side([people / n / "01.jpg" for n in ("mark", "jennifer", "tony_blair")],
                                                   p))
    put("face_8px.png", lambda p: _tiny_face(face, p))
    put("cut_face.jpg", lambda p: face.crop((160, 0, face.width, face.height)).save(p, quality=95))  # jaw cut off
    put("truncated.jpg", lambda p: p.write_bytes((root / "face.jpg").read_bytes()[:3000]))
    put("text.jpg", lambda p: p.write_text("this is not a photo\n"))
    put("empty.jpg", lambda p: p.write_bytes(b""))
    put("bomb.png", bomb_png)
    # A tiny StyleGAN2 generator and a file of named directions for it (issue #15).
    put("tiny_generator.pt", tiny_gan.tiny_checkpoint)
    put("directions.pt", lambda p: save_directions(p, {"smile": torch.ones(tiny_gan.TINY.w_dim)}, {"method": "test"}))
    # Target / reference folders.
    for name in ("targets_empty", "targets_no_images", "targets_corrupt_among_good", "targets_all_bad"):
        (root / name).mkdir(exist_ok=True)
        c[name] = root / name
    (root / "targets_no_images" / "notes.txt").write_text("no photos here")
    for i in (1, 2):
        shutil.copy(people / "jennifer" / f"0{i}.jpg", root / "targets_corrupt_among_good" / f"0{i}.jpg")
    shutil.copy(c["truncated.jpg"], root / "targets_corrupt_among_good" / "03.jpg")
    shutil.copy(c["text.jpg"], root / "targets_all_bad" / "01.jpg")
    shutil.copy(c["empty.jpg"], root / "targets_all_bad" / "02.jpg")
    c.update(_records(root / "records", c["face.jpg"]))
    c.update(_moved_records(root / "records", c))
    c.update(_pairs_files(root, faces))
    return c


def _moved_records(folder: Path, c: dict[str, Path]) -> dict[str, Path]:
    """``records_killed``: the good run and the temps a writer killed while rewriting it left (a whole record and
    an empty picture); ``records_copied``: the good run's folder copied and its picture replaced (blurred)."""
    killed = folder / "killed"
    killed.mkdir(exist_ok=True)
    for suffix in (".json", ".png"):
        shutil.copy(c["record_good"].with_suffix(suffix), killed / f"good{suffix}")
    killed_writer(killed / "good.png", json.loads(c["record_good"].read_text()))
    copied = folder / "copied"
    copied.mkdir(exist_ok=True)
    shutil.copy(c["record_good"], copied / "good.json")
    Image.open(c["record_good"].with_suffix(".png")).filter(ImageFilter.GaussianBlur(2)).save(copied / "good.png")
    return {"records_killed": killed, "records_copied": copied}


def killed_writer(picture: Path, record: dict) -> None:
    """A process writing ``picture`` and its record, killed (SIGKILL: no cleanup runs) while the picture is being
    written: its hidden temps stay beside them. A fork of this one, which needs no fresh interpreter."""
    from optimswap.io.image import json_file, write_files

    pid = os.fork()
    if pid == 0:  # the writer: never returns
        try:
            write_files([json_file(picture.with_suffix(".json"), record), (picture, lambda tmp: time.sleep(120))])
        finally:
            os._exit(1)
    deadline = time.monotonic() + 60
    while not list(picture.parent.glob(f".{picture.name}.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _records(folder: Path, photo: Path) -> dict[str, Path]:
    """A good run record (its picture is the photo itself: an edit that changed nothing) and one malformed record
    of each kind, each in a folder of its own and together in ``records_all``."""
    from optimswap.face import find_face
    from optimswap.io import read_image

    good = {"optimswap": "test", "edit": "swap", "source": str(photo), "inputs": {"target": [str(photo)]},
            "face_index": 0, "output": "", "options": {}, "source_face_box": list(find_face(read_image(photo)).box),
            "timings": {"total_s": 1.0}, "evaluations": 1, "loss_history": [{"eval": 0, "total": 1.0}]}
    bad = {"options_not_a_dict": {"options": [1, 2]}, "unknown_option": {"options": {"no_such_option": 1}},
           "timings_a_list": {"timings": [1.0]}, "source_null": {"source": None},
           "source_missing": {"source": str(folder / "missing.jpg")}, "edit_unknown_version": {"face_index": "x"}}
    everything = folder / "records_all"
    everything.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, change in {"good": {}, **bad, "output_other_size": {}}.items():
        picture = everything / f"{name}.png"
        image = Image.open(photo)
        (image.resize((image.width // 2, image.height // 2)) if name == "output_other_size" else image).save(picture)
        record = {**good, "output": str(picture), **change}
        (everything / f"{name}.json").write_text(json.dumps(record))
        made[f"record_{name}"] = everything / f"{name}.json"
    shutil.copy(photo, everything / "truncated.png")  # a picture beside it makes the broken file a record
    (everything / "truncated.json").write_text(json.dumps({**good, "output": str(everything / "truncated.png")})[:80])
    made["record_truncated"] = everything / "truncated.json"
    made["records_all"] = everything
    (folder / "no_records").mkdir(exist_ok=True)
    (folder / "no_records" / "notes.json").write_text('{"not": "a run record"}')
    made["records_none"] = folder / "no_records"
    return made


def _pairs_files(root: Path, faces: Path) -> dict[str, Path]:
    people = faces / "identities"
    files = {"pairs_no_target_column.csv": "source,who\n{p}/mark/01.jpg,{p}/jennifer\n",
             "pairs_missing_photo.csv": "source,target\n{p}/mark/99.jpg,{p}/jennifer\n",
             "pairs_empty.csv": "",
             "pairs_good.csv": "source,target\n{p}/mark/01.jpg,{p}/jennifer\n"}
    made = {}
    for name, text in files.items():
        (root / name).write_text(text.format(p=people))
        made[name] = root / name
    return made


def _save_rgb48(rgb: np.ndarray, path: Path) -> None:
    import cv2  # PIL cannot write 16-bit colour

    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]).astype(np.uint16) * 257)


def _side_by_side(paths: list[Path], out: Path) -> None:
    tiles = [Image.open(p).convert("RGB") for p in paths]
    tiles = [t.resize((round(t.width * 300 / t.height), 300), Image.LANCZOS) for t in tiles]
    sheet = Image.new("RGB", (sum(t.width for t in tiles), 300))
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width
    sheet.save(out, quality=95)


def _tiny_face(face: Image.Image, out: Path) -> None:
    """The face shrunk to about 8 pixels across, in a 64-px photo."""
    small = face.resize((20, round(20 * face.height / face.width)), Image.LANCZOS)
    canvas = Image.new("RGB", (64, 64), (128, 128, 128))
    canvas.paste(small, (22, 22))
    canvas.save(out)


@dataclass
class Case:
    """One command line against the corpus: ``args`` may name corpus entries as {name}, the output folder as
    {out}; ``code`` is the exit code it must give (None: refused naming ``names``, or accepted), ``names`` what
    its error line must mention."""

    name: str
    args: list[str]
    code: int | None
    names: str = ""
    existing: dict[str, bytes] = field(default_factory=dict)  # files the case finds in {out} beforehand
    before_run: bool = False  # refused before the edit runs (checked with a dry run)
    says: str = ""  # what its output (stdout and stderr) must contain, whatever the exit code
    # The world the case runs in, given {out}: a full disk, a killed writer's temps, an environment variable ...
    around: Callable[[Path], contextlib.AbstractContextManager] | None = None
    quiet: bool = False  # nothing may reach standard error (-q)

    @property
    def dry(self) -> bool:
        return self.code in (None, WOULD_RUN) or self.before_run


def run_cli(args: list[str], dry: bool = False) -> tuple[int, str, str]:
    """Run the ``optimswap`` entry point in this process; returns (exit code, stdout, stderr). ``dry``: the edit
    itself is not run; a command that gets that far exits with WOULD_RUN."""
    from optimswap import runs
    from optimswap.cli import run

    def would_run(*args, **kwargs):
        raise SystemExit(WOULD_RUN)

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["optimswap", *args]
    code, real = 0, runs.run_edit
    if dry:
        runs.run_edit = would_run
    # Warnings go through logging, whose handler was made with the stderr of its day; and native libraries write to
    # file descriptor 2, past Python's sys.stderr: both are read here as a user's terminal shows them.
    logger, handler = logging.getLogger("optimswap"), logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), native_stderr() as native:
            run()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv, runs.run_edit = argv, real
        logger.removeHandler(handler)
        logger.propagate = True
    return code, out.getvalue(), native.read() + err.getvalue()


class _Captured:
    text = ""

    def read(self) -> str:
        return self.text


@contextlib.contextmanager
def native_stderr() -> Iterator[_Captured]:
    """File descriptor 2 into a file for the block; its text in the yielded object's ``read()`` afterwards."""
    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            file.seek(0)
            captured.text = file.read().decode(errors="replace")


def photo_cases(faces: Path) -> list[Case]:
    """Each odd or bad photo as the swap's source, as the makeup's reference, and as the plain photo."""
    mark_dir, plain = str(faces / "identities" / "mark"), str(faces / "makeup" / "plain" / "01.jpg")
    readable = ["face.jpg", "grey16.png", "rgb48.png", "grey.png", "cmyk.jpg", "palette_alpha.png", "exif6.jpg",
                "exif8.jpg", "fäce ü.jpg", "three_faces.jpg"]
    refused = {"no_face.png": "no face", "face_8px.png": "no face", "truncated.jpg": "truncated.jpg",
               "text.jpg": "text.jpg", "empty.jpg": "empty.jpg", "bomb.png": "bomb.png"}
    cases = []
    for name in readable:
        cases.append(Case(f"{name} as source", ["swap", f"{{{name}}}", mark_dir, "-o", "{out}/r.png", *SWAP_TINY], 0))
        cases.append(Case(f"{name} as reference", ["makeup", plain, f"{{{name}}}", "-o", "{out}/r.png", *TINY], 0))
    for name, says in refused.items():
        cases.append(Case(f"{name} as source", ["swap", f"{{{name}}}", mark_dir, "-o", "{out}/r.png", *SWAP_TINY], 2,
                          says))
        cases.append(Case(f"{name} as plain photo", ["makeup", f"{{{name}}}", plain, "-o", "{out}/r.png", *TINY], 2,
                          says))
    style = str(faces / "styles" / "01.jpg")
    cases.append(Case("no_face.png as style", ["stylize", plain, "{no_face.png}", "-o", "{out}/r.png", *TINY], 2,
                      "no_face.png"))
    cases.append(Case("grey.png as stylize photo", ["stylize", "{grey.png}", style, "-o", "{out}/r.png", *TINY], 0))
    cases.append(Case("three faces, --face-index 5", ["swap", "{three_faces.jpg}", mark_dir, "-o", "{out}/r.png",
                                                      "--face-index", "5", *SWAP_TINY], 2, "face index"))
    return cases


def folder_cases(faces: Path) -> list[Case]:
    source = str(faces / "identities" / "mark" / "01.jpg")
    return [
        Case("empty target folder", ["swap", source, "{targets_empty}", "-o", "{out}/r.png", *SWAP_TINY], 2,
             "targets_empty"),
        Case("target folder without images", ["swap", source, "{targets_no_images}", "-o", "{out}/r.png",
                                              *SWAP_TINY], 2, "targets_no_images"),
        Case("a corrupt target among good ones", ["swap", source, "{targets_corrupt_among_good}", "-o",
                                                  "{out}/r.png", *SWAP_TINY], 0),
        Case("every target photo bad", ["swap", source, "{targets_all_bad}", "-o", "{out}/r.png", *SWAP_TINY], 2,
             "targets_all_bad"),
    ]


def output_cases(faces: Path) -> list[Case]:
    source, targets = str(faces / "identities" / "mark" / "01.jpg"), str(faces / "identities" / "jennifer")
    swap = ["swap", source, targets]
    before = [
        Case("output = the source photo", [*swap, "-o", source, "--overwrite", *SWAP_TINY], 2, "input"),
        Case("output in a missing folder (created)", [*swap, "-o", "{out}/new/deeper/r.png", *SWAP_TINY], 0),
        Case("output under a file", [*swap, "-o", "{out}/a_file/r.png", *SWAP_TINY], 2, "a_file",
             existing={"a_file": b"x"}),
        Case("output in /proc", [*swap, "-o", "/proc/optimswap_r.png", *SWAP_TINY], 2, "/proc"),
        Case("unknown output extension", [*swap, "-o", "{out}/r.xyz", *SWAP_TINY], 2, "r.xyz"),
        Case("OUT.json is a folder", [*swap, "-o", "{out}/d.png", "--overwrite", *SWAP_TINY], 2, "d.json",
             existing={"d.json/": b""}),
        Case("existing output without --overwrite", [*swap, "-o", "{out}/old.png", *SWAP_TINY], 2, "overwrite",
             existing={"old.png": b"old picture", "old.json": b"{}"}),
    ]
    for case in before:
        case.before_run = case.code == 2
    return before


BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e12"]
WOULD_RUN = 99  # exit code of an option case whose values passed every check before the run (see run_cli's dry)


def option_cases(faces: Path) -> list[Case]:
    """Every numeric option of every edit at 0, negative, nan, inf and absurdly large: refused with the option's
    name (exit 2), or accepted, which a dry run reports as WOULD_RUN (nothing is optimized)."""
    import dataclasses
    import typing

    from optimswap.registry import edit_names, get_edit

    photo, folder = str(faces / "identities" / "mark" / "01.jpg"), str(faces / "identities" / "jennifer")
    plain, reference = (str(faces / "makeup" / k / "01.jpg") for k in ("plain", "makeup"))
    style = str(faces / "styles" / "01.jpg")
    inputs = {"swap": [photo, folder], "makeup": [plain, reference], "stylize": [photo, style], "invert": [photo]}
    cases = []
    for edit_name in edit_names():
        if edit_name not in inputs:
            continue
        config = get_edit(edit_name).config
        hints = typing.get_type_hints(config)
        output = "{out}/r.pt" if edit_name == "invert" else "{out}/r.png"  # invert writes a latent
        for f in dataclasses.fields(config):
            if hints[f.name] not in (int, float):
                continue
            flag = "--" + f.name.replace("_", "-")
            for value in BAD_NUMBERS:
                if hints[f.name] is int and value in ("1e12",):
                    value = "1000000000000"
                code = 2 if value in ("nan", "inf", "-inf", "-1") else None
                cases.append(Case(f"{flag} {value}", [edit_name, *inputs[edit_name], "-o", output, f"{flag}={value}",
                                                      "-q"], code, flag))
    return cases


def command_cases(faces: Path) -> list[Case]:
    """eval, ablate, train-lighting, invert, edit and directions against bad records, pair lists, grids, outputs,
    latents and direction files."""
    photo = str(faces / "identities" / "mark" / "01.jpg")
    edit = ["edit", photo, "--generator", "{tiny_generator.pt}", "-o", "{out}/r.png", "--size", "32", "-q"]
    cases = [
        Case("eval: a folder of malformed records and a good one", ["eval", "{records_all}"], 2,
             "8 of 9 run(s) could not"),
        Case("eval: a folder with no run record", ["eval", "{records_none}"], 2, "no run records"),
        Case("eval: -o in /proc", ["eval", "{record_good}", "-o", "/proc/optimswap_eval.csv"], 2, "/proc",
             before_run=True),
        Case("eval: a missing path", ["eval", "{out}/nothing_here"], 2, "nothing_here"),
        Case("ablate: pairs without a target column", ["ablate", "--pairs", "{pairs_no_target_column.csv}", "-o",
                                                       "{out}/sweep"], 2, "pairs_no_target_column.csv"),
        Case("ablate: a pair's photo missing", ["ablate", "--pairs", "{pairs_missing_photo.csv}", "-o", "{out}/sweep"],
             2, "99.jpg"),
        Case("ablate: an empty pairs file", ["ablate", "--pairs", "{pairs_empty.csv}", "-o", "{out}/sweep"], 2,
             "pairs_empty.csv"),
        Case("ablate: unknown grid option", ["ablate", "--pairs", "{pairs_good.csv}", "--grid", "nope=1,2", "-o",
                                             "{out}/sweep"], 2, "nope"),
        Case("ablate: nan in a grid", ["ablate", "--pairs", "{pairs_good.csv}", "--grid", "style=40,nan", "-o",
                                       "{out}/sweep"], 2, "style"),
        Case("ablate: output is a file", ["ablate", "--pairs", "{pairs_good.csv}", "-o", "{out}/a_file"], 2, "a_file",
             existing={"a_file": b"x"}),
        Case("invert: no generator weights offline", ["invert", photo, "-o", "{out}/r.pt", "-q"], 2, "--generator"),
        Case("invert: a missing generator file", ["invert", photo, "-o", "{out}/r.pt", "--generator",
                                                  "{out}/missing.pkl", "-q"], 2, "missing.pkl"),
        Case("invert: a text file as generator", ["invert", photo, "-o", "{out}/r.pt", "--generator", "{text.jpg}",
                                                  "-q"], 2, "text.jpg"),
        Case("invert: a picture as output", ["invert", photo, "-o", "{out}/r.png", "--generator",
                                             "{tiny_generator.pt}"], 2, "LATENT.pt", before_run=True),
        Case("edit: a missing latent file", [*edit, "--latent", "{out}/missing.pt", "--directions", "{directions.pt}",
                                             "--attr", "smile=1"], 2, "missing.pt"),
        Case("edit: --attr without =STRENGTH", [*edit, "--directions", "{directions.pt}", "--attr", "smile"], 2,
             "--attr", before_run=True),
        Case("edit: an attribute the directions file lacks", [*edit, "--directions", "{directions.pt}", "--attr",
                                                              "frown=2"], 2, "frown"),
        Case("edit: --attr without a directions file", [*edit, "--attr", "smile=2"], 2, "optimswap directions fit"),
        Case("edit: a missing direction file", [*edit, "--direction", "{out}/nope.npy=1"], 2, "nope.npy"),
        Case("directions fit: an attribute without a scorer", ["directions", "fit", "-g", "{tiny_generator.pt}",
                                                               "--attr", "age", "-o", "{out}/d.pt"], 2, "age"),
        Case("train-lighting: missing faces folder", ["train-lighting", "--faces", "{out}/nowhere", "-o",
                                                      "{out}/w.pt"], 2, "nowhere"),
        Case("train-lighting: --steps 0", ["train-lighting", "--faces", str(faces), "--steps", "0", "-o",
                                           "{out}/w.pt"], 2, "--steps"),
        Case("train-lighting: existing weights", ["train-lighting", "--faces", str(faces), "--steps", "1", "-o",
                                                  "{out}/w.pt"], 2, "overwrite", existing={"w.pt": b"weights"}),
        Case("train-lighting: -o in /proc", ["train-lighting", "--faces", str(faces), "--steps", "1", "-o",
                                             "/proc/optimswap_w.pt"], 2, "/proc"),
    ]
    return cases


@contextlib.contextmanager
def full_disk(out: Path) -> Iterator[None]:
    """{out}/full: a 64 KiB tmpfs where this process may mount one (root, no container rule against it), else a
    folder whose filesystem reports 64 KiB free (a simulation of the same)."""
    folder = out / "full"
    folder.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    if mounted:
        try:
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    real = shutil.disk_usage

    def reported(path):
        usage = real(path)
        return usage._replace(free=64 * 1024) if Path(path).resolve().is_relative_to(folder.resolve()) else usage

    with _patched(shutil, "disk_usage", reported):
        yield


@contextlib.contextmanager
def disk_fills_while_writing(out: Path) -> Iterator[None]:
    """The disk fills while the result is written: a picture saved to a file gets half written, then ENOSPC (a
    simulation: space that another process takes during the run)."""
    real = Image.Image.save

    def save(image, fp, *args, **kwargs):
        if not isinstance(fp, (str, os.PathLike)):  # in memory (the format probe)
            return real(image, fp, *args, **kwargs)
        Path(fp).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with _patched(Image.Image, "save", save):
        yield


@contextlib.contextmanager
def killed_writer_temps(out: Path) -> Iterator[None]:
    """The temps of a writer of {out}/r.png killed by SIGKILL (made by a real process, really killed)."""
    killed_writer(out / "r.png", {"edit": "swap", "optimswap": "killed"})
    yield


def environment(name: str, value: str, file: str = "") -> Callable[[Path], contextlib.AbstractContextManager]:
    """Sets the variable ``name`` to ``value`` ({out} filled in) for the case; ``file``: a file made there first."""
    @contextlib.contextmanager
    def around(out: Path) -> Iterator[None]:
        if file:
            (out / file).write_bytes(b"x")
        previous = os.environ.get(name)
        os.environ[name] = value.replace("{out}", str(out))
        try:
            yield
        finally:
            if previous is None:
                del os.environ[name]
            else:
                os.environ[name] = previous
    return around


@contextlib.contextmanager
def fresh_mediapipe(out: Path) -> Iterator[None]:
    """MediaPipe's graphs made anew in the case (they log as they are made and first run)."""
    from optimswap.face import detect

    detect._face_mesh.cache_clear()
    yield


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> Iterator[None]:
    real = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, real)


def user_fault_cases(faces: Path) -> list[Case]:
    """What a demanding user meets beyond bad files (issue #37): each a command as that user typed it."""
    people = faces / "identities"
    source, targets = str(people / "mark" / "01.jpg"), str(people / "jennifer")
    swap = ["swap", source, targets]
    plain, reference = (str(faces / "makeup" / k / "01.jpg") for k in ("plain", "makeup"))
    makeup = ["makeup", plain, reference]  # the lightest edit, where what is tested is not the edit's own
    mediapipe_makeup = [*makeup, "-o", "{out}/r.png", "--landmarks", "mediapipe", *TINY]
    return [
        Case("output on a full disk", [*swap, "-o", "{out}/full/r.png", *SWAP_TINY], 2, "r.png", says="free",
             around=full_disk, before_run=True),
        Case("the disk fills while writing", [*makeup, "-o", "{out}/r.png", *TINY], 2, "r.png",
             says="no space left", around=disk_fills_while_writing),
        Case("JPEG output", [*makeup, "-o", "{out}/r.jpg", *TINY], 0, says="is a JPEG"),
        *[Case(f"--device {device}", [*swap, "-o", "{out}/r.png", "--device", device, *SWAP_TINY], 2, "--device")
          for device in ("mps", "xla", "meta", "vulkan")],
        Case("a killed writer's temps beside OUT", [*makeup, "-o", "{out}/r.png", *TINY], 0,
             around=killed_writer_temps),
        Case("eval: a killed writer's temps beside a run", ["eval", "{records_killed}"], 0),
        Case("demo: OPTIMSWAP_DATA is a file", ["demo", "-o", "{out}/r.png", *SWAP_TINY], 2, "OPTIMSWAP_DATA",
             around=environment("OPTIMSWAP_DATA", "{out}/a_file", file="a_file")),
        Case("fetch: OPTIMSWAP_DATA in /proc", ["fetch", "mark"], 2, "OPTIMSWAP_DATA",
             around=environment("OPTIMSWAP_DATA", "/proc/optimswap_cache")),
        Case("-q: MediaPipe's native logs kept off stderr", mediapipe_makeup, 0, quiet=True, around=fresh_mediapipe),
        Case("--debug: MediaPipe's native logs shown", ["--debug", *mediapipe_makeup], 0, says="Feedback manager",
             around=fresh_mediapipe),
        Case("a list of target photos", ["swap", source, *(f"{targets}/0{i}.jpg" for i in (1, 2, 3)), "-o",
                                         "{out}/r.png", *SWAP_TINY], 0, says="targets used"),
        Case("a folder among target photos", ["swap", source, f"{targets}/01.jpg", targets, "-o", "{out}/r.png",
                                              *SWAP_TINY], 2, "is a folder", before_run=True),
        Case("a source face cut by the border", ["swap", "{cut_face.jpg}", targets, "-o", "{out}/r.png", *SWAP_TINY],
             0, says="cut by the photo's border"),
        Case("stylize: a photograph as the style", ["stylize", plain, f"{targets}/01.jpg", "-o", "{out}/r.png",
                                                   *TINY], 0, says="looks like a photograph"),
        Case("makeup: the plain photo as its own reference", ["makeup", plain, plain, "-o", "{out}/r.png", *TINY], 0,
             says="the reference is the plain photo itself"),
        Case("eval: a copied run whose picture was replaced", ["eval", "{records_copied}"], 0,
             says="scored good.png beside the record"),
    ]


def materialize(case: Case, corpus: dict[str, Path], out: Path) -> list[str]:
    """The case's arguments with corpus entries and the output folder filled in; its existing files written."""
    out.mkdir(parents=True, exist_ok=True)
    for name, content in case.existing.items():
        if name.endswith("/"):
            (out / name).mkdir(exist_ok=True)
        else:
            (out / name).write_bytes(content)
    values = {f"{{{k}}}": str(v) for k, v in corpus.items()} | {"{out}": str(out)}
    args = []
    for a in case.args:
        for token, value in values.items():
            a = a.replace(token, value)
        args.append(a)
    return args


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file under ``folder`` with its bytes (folders as None)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def all_cases(faces: Path) -> list[Case]:
    return (photo_cases(faces) + folder_cases(faces) + output_cases(faces) + option_cases(faces)
            + command_cases(faces) + user_fault_cases(faces))


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/bad_inputs")
    faces = Path(os.environ.get("OPTIMSWAP_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces"))
    corpus = build_corpus(root / "corpus", faces)
    print("| case | command | exit | message |\n|---|---|---|---|")
    for i, case in enumerate(all_cases(faces)):
        out = root / f"case{i:03d}"
        args = materialize(case, corpus, out)
        with case.around(out) if case.around else contextlib.nullcontext():
            code, _, err = run_cli(args, dry=case.dry)
        message = err.strip().splitlines()[-1] if err.strip() else ""
        print(f"| {case.name} | {case.args[0]} | {code} | {message.replace('|', '/')} |", flush=True)
    print(json.dumps({"cases": len(all_cases(faces))}))


if __name__ == "__main__":
    main()
