"""Pictures of a sweep: a labelled contact sheet and metric-against-option plots (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from optimswap.io import ImageError, read_image  # noqa: E402

PLOT_METRICS = ("id_drop", "nme", "psnr_outside", "lighting_error", "hf_ratio", "seconds")


def face_crop(image: np.ndarray, box, margin: float = 0.45) -> np.ndarray:
    """Square crop around a face box, grown by ``margin`` of its side on every edge (clipped to the photo)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    return image[top : int(min(h, cy + side / 2)), left : int(min(w, cx + side / 2))]


def contact_sheet(cells: dict[tuple[str, str], tuple[Path, tuple]], rows: list[str], columns: list[str], path: Path,
                  cell_inches: float = 1.9) -> None:
    """Grid of face crops: ``cells[(row, column)] = (picture, face box)``; a missing cell says so."""
    fig, axes = plt.subplots(len(rows), len(columns),
                             figsize=(cell_inches * len(columns), cell_inches * len(rows) + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = cells.get((row, column))
            if cell is None:
                ax.text(0.5, 0.5, "missing", ha="center")
            else:
                try:
                    ax.imshow(face_crop(read_image(cell[0]), cell[1]))
                except ImageError:
                    ax.text(0.5, 0.5, "unreadable", ha="center")
            if i == 0:
                ax.set_title(column, fontsize=8)
            if j == 0:
                ax.set_ylabel(row, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def metric_plots(rows: list[dict], option: str, path: Path, metrics=PLOT_METRICS, group: str = "pair") -> None:
    """One panel per metric: its mean over the other options against ``option``'s values, a line per ``group``."""
    values = list(dict.fromkeys(str(r[option]) for r in rows))
    numeric = all(_number(v) is not None for v in values)
    xs = {v: (_number(v) if numeric else i) for i, v in enumerate(values)}
    metrics = [m for m in metrics if any(_number(r.get(m)) is not None for r in rows)]
    if not metrics:  # no scored run (all failed): nothing to plot
        return
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name in dict.fromkeys(r[group] for r in rows):
            points = []
            for v in values:
                found = [_number(r.get(metric)) for r in rows if r[group] == name and str(r[option]) == v]
                got = [g for g in found if g is not None]
                if got:
                    points.append((xs[v], float(np.mean(got))))
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel(option)
        ax.set_title(metric, fontsize=9)
        if not numeric:
            ax.set_xticks(list(xs.values()), values, rotation=30, fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"metrics against {option}: mean over the other swept options, one line per {group}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
