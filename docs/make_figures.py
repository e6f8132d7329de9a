"""The README's gallery: one figure per edit, made from the test photos into docs/images/*.jpg.

python docs/make_figures.py [--faces DIR] [--out docs/images] [--tiny]

Photos come from --faces (default $OPTIMSWAP_FACES, else ../shared/faces beside the repository). Every edit runs at
its default preset, so the figures show what a user gets without options:
- swap.jpg: per pair, source | classic landmark swap | optimswap | the best-shape target photo;
- makeup.jpg: plain | reference | degree 0.5 | degree 1;
- stylize.jpg: photo | exemplar | result;
- stylegan.jpg: invert and edit on an untrained 64-px generator (no trained weights ship): the mechanics only.
Faces are cropped around the source's face box at the photo's own resolution, then scaled to one tile size; the
figures are JPEGs, about 0.5 MB in all. Only derived pictures are written, never a test photo itself.
--tiny: one row per figure on 64-px frames and a few iterations (CI: the script still runs and writes its figures).
At the defaults it runs 8 swaps, 4 makeup and 3 stylize runs: about 15 minutes on an idle CPU thread (50 on a
heavily shared 2-core machine); ~20 s with --tiny.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from optimswap import get_edit, makeup, swap  # noqa: E402
from optimswap.edits.stylize import stylize  # noqa: E402
from optimswap.eval.plots import face_crop  # noqa: E402
from optimswap.face import find_face  # noqa: E402
from optimswap.gan import Architecture, untrained_generator  # noqa: E402
from optimswap.gan.checkpoint import save_generator  # noqa: E402
from optimswap.gan.directions import save_directions, sefa  # noqa: E402
from optimswap.gan.invert import save_latent  # noqa: E402
from optimswap.io import read_image, to_numpy  # noqa: E402
from optimswap.registry import run_edit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Photo 01 of the first person with the folder of the second: the pairs the swap bench reports, one of them with
# the hardest target set (tony_blair: small, soft LFW photos).
SWAP_PAIRS = (("jennifer", "angelina"), ("angelina", "mark"), ("deepface_id29", "jennifer"), ("mark", "tony_blair"))
MAKEUP_PAIRS = (("01", "01"), ("02", "05"))  # plain photo, makeup reference
STYLIZE_PAIRS = (("jennifer", "02"), ("mark", "01"), ("tony_blair", "03"))  # person, exemplar
GAN_STRENGTHS = (-6, 6)  # along the untrained generator's first SeFa direction
TILE = 240  # pixels per face in the figures
JPEG_QUALITY = 80
TINY = {"size": 64, "levels": 1, "iters": 2}


def tile(image: np.ndarray, box=None, margin: float = 0.45) -> np.ndarray:
    """The face (``box``: around it, else the whole picture) as a TILE x TILE square."""
    crop = face_crop(image, box, margin) if box is not None else image
    return np.asarray(ImageOps.fit(Image.fromarray(crop), (TILE, TILE), Image.LANCZOS))


def save_grid(rows: list[list[np.ndarray]], columns: list[str], path: Path, labels: list[str] | None = None,
              note: str = "") -> None:
    """Tiles in a grid with column titles (and row labels, a note above), each tile at its own pixel size."""
    dpi, title_in = 100, 0.3 + (0.3 if note else 0)
    label_in = 0.25 if labels else 0
    fig = plt.figure(figsize=(label_in + len(columns) * TILE / dpi, title_in + len(rows) * TILE / dpi), dpi=dpi)
    width, height = fig.get_size_inches()
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            ax = fig.add_axes(((label_in + j * TILE / dpi) / width, (height - title_in - (i + 1) * TILE / dpi) / height,
                               TILE / dpi / width, TILE / dpi / height))
            ax.imshow(image, interpolation="none")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=10)
            if j == 0 and labels:
                ax.set_ylabel(labels[i], fontsize=9)
    if note:
        fig.text(0.5, 1 - 0.3 / height, note, ha="center", va="center", fontsize=9, style="italic")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, pil_kwargs={"quality": JPEG_QUALITY, "optimize": True})
    plt.close(fig)


def swap_figure(faces: Path, out: Path, tiny: bool) -> None:
    edit, rows, labels = get_edit("swap"), [], []
    cfg = edit.preset("fast", **TINY) if tiny else edit.preset("default")
    for person, target in SWAP_PAIRS[: 1 if tiny else None]:
        source = read_image(faces / "identities" / person / "01.jpg")
        targets = sorted((faces / "identities" / target).glob("*.jpg"))[: 2 if tiny else None]
        full = swap(source, targets, cfg, progress=False)
        classic = swap(source, targets, cfg.replace(method="classic"), progress=False)
        box = full.source_face.box
        assert full.targets is not None  # a swap result always has its target set
        best = full.targets.best_photo
        rows.append([tile(source, box), tile(classic.image, box), tile(full.image, box),
                     tile(best, find_face(best).box)])
        labels.append(f"{person} → {target}")
        print(f"swap {labels[-1]}: {full.timings['total_s']:.0f} s", flush=True)
    save_grid(rows, ["source", "classic swap", "optimswap", "a target photo"], out / "swap.jpg", labels)


def makeup_figure(faces: Path, out: Path, tiny: bool) -> None:
    edit, rows = get_edit("makeup"), []
    cfg = edit.preset("default", **TINY) if tiny else edit.preset("default")
    for plain_name, reference_name in MAKEUP_PAIRS[: 1 if tiny else None]:
        plain = read_image(faces / "makeup" / "plain" / f"{plain_name}.jpg")
        reference = read_image(faces / "makeup" / "makeup" / f"{reference_name}.jpg")
        half, full = (makeup(plain, reference, cfg.replace(degree=d), progress=False) for d in (0.5, 1.0))
        box = full.source_face.box
        rows.append([tile(plain, box), tile(reference, find_face(reference).box), tile(half.image, box),
                     tile(full.image, box)])
        print(f"makeup plain {plain_name} + reference {reference_name}: {full.timings['total_s']:.0f} s", flush=True)
    save_grid(rows, ["plain", "reference", "degree 0.5", "degree 1"], out / "makeup.jpg")


def stylize_figure(faces: Path, out: Path, tiny: bool) -> None:
    edit, rows = get_edit("stylize"), []
    cfg = edit.preset("default", **TINY) if tiny else edit.preset("default")
    for person, exemplar_name in STYLIZE_PAIRS[: 1 if tiny else None]:
        photo = read_image(faces / "identities" / person / "01.jpg")
        exemplar = read_image(faces / "styles" / f"{exemplar_name}.jpg")
        result = stylize(photo, exemplar, cfg, progress=False)
        box = result.source_face.box
        rows.append([tile(photo, box, 0.6), tile(exemplar, find_face(exemplar).box, 0.6),
                     tile(result.image, box, 0.6)])
        print(f"stylize {person} x {exemplar_name}: {result.timings['total_s']:.0f} s", flush=True)
    save_grid(rows, ["photo", "exemplar", "result"], out / "stylize.jpg")


def stylegan_figure(faces: Path, out: Path, tiny: bool) -> None:
    """Invert a face into an untrained generator, move the latent along SeFa's first direction, paste it back."""
    work = Path(tempfile.mkdtemp(prefix="optimswap-figures-"))
    generator = untrained_generator(Architecture(64, (64, 64, 32, 32, 16), z_dim=64, w_dim=64, mapping_layers=2,
                                                 mapping_hidden=64))
    save_generator(work / "g.pt", generator)
    photo_path = faces / "identities" / "jennifer" / "01.jpg"
    cfg = get_edit("invert").preset("default", generator=str(work / "g.pt"), size=64, device="cpu",
                                    iters=5 if tiny else 150, w_avg_samples=1000)
    inverted = run_edit("invert", photo_path, {}, cfg, progress=False)
    save_latent(work / "latent.pt", inverted.latent, inverted.noises)
    vectors, _ = sefa(generator, k=1)
    save_directions(work / "dirs.pt", {"sefa0": vectors[0]}, {"method": "sefa"})
    moved = [run_edit("invert", photo_path, {}, cfg.replace(latent=str(work / "latent.pt"),
                                                              directions=str(work / "dirs.pt"),
                                                              attr=(f"sefa0={s}",)), progress=False)
             for s in GAN_STRENGTHS]
    photo, box = read_image(photo_path), inverted.source_face.box
    frames = [tile(to_numpy(inverted.frame.image)), tile(to_numpy(inverted.frame_result))]
    frames += [tile(to_numpy(m.frame_result)) for m in moved]
    pasted = [tile(photo, box), tile(inverted.image, box), *(tile(m.image, box) for m in moved)]
    strengths = [f"sefa0 {s:+d}" for s in GAN_STRENGTHS]
    save_grid([frames, pasted], ["input", "reconstruction", *strengths], out / "stylegan.jpg",
              ["64-px frame", "pasted into the photo"],
              note="untrained random generator: the mechanics of invert and edit, not a face edit")
    print(f"stylegan (untrained generator): {inverted.timings['total_s']:.0f} s", flush=True)


FIGURES = {"swap": swap_figure, "makeup": makeup_figure, "stylize": stylize_figure, "stylegan": stylegan_figure}


def main() -> None:
    default_faces = os.environ.get("OPTIMSWAP_FACES") or REPO.parent / "shared" / "faces"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=Path(default_faces), help="Folder laid out like shared/faces.")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    ap.add_argument("--only", nargs="+", choices=list(FIGURES), default=list(FIGURES), help="Make these figures.")
    ap.add_argument("--tiny", action="store_true", help="One row per figure, 64-px frames, a few iterations.")
    args = ap.parse_args()
    if not (args.faces / "identities").is_dir():
        ap.error(f"--faces {args.faces}: no identities/ folder (set OPTIMSWAP_FACES or pass --faces)")
    torch.manual_seed(0)
    for name in args.only:
        t0 = time.perf_counter()
        FIGURES[name](args.faces, args.out, args.tiny)
        path = args.out / f"{name}.jpg"
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
