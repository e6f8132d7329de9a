"""The user documentation: every option of every command's --help is explained on the command's page, the pages
and pictures the README links to exist, and the gallery script still runs (on tiny settings; pixels unchecked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from PIL import Image

from optimswap.cli import config_options, main, run_options
from optimswap.config import EditConfig
from optimswap.registry import get_edit

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# Command (as typed after ``optimswap``) -> its page. Options every edit shares (the run options and the frame,
# solver, encoder, landmark and compositing options of EditConfig) may instead be explained once on COMMON, which
# the page then links to.
PAGES = {
    ("swap",): "swap.md", ("demo",): "swap.md", ("train-lighting",): "swap.md",
    ("makeup",): "makeup.md",
    ("stylize",): "stylize.md", ("swap-video",): "video.md",
    ("invert",): "stylegan.md", ("edit",): "stylegan.md", ("directions", "sefa"): "stylegan.md",
    ("directions", "fit"): "stylegan.md",
    ("eval",): "evaluation.md",
    ("ablate",): "ablation.md",
}
COMMON = "options.md"
# Commands that take another command's options as they are: those may be explained on that command's page.
SHARED_WITH = {("swap-video",): "swap.md"}


def command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = main
    ctx = click.Context(main)
    for name in path:
        assert isinstance(cmd, click.Group)
        found = cmd.get_command(ctx, name)
        assert found is not None, f"no command optimswap {' '.join(path)}"
        cmd = found
    return cmd


def long_names(params: list[click.Parameter]) -> set[str]:
    """The long flags of the options (``--x`` of ``--x/--no-x``), --help left out."""
    return {o for p in params if isinstance(p, click.Option) for o in p.opts if o.startswith("--")} - {"--help"}


def common_options() -> set[str]:
    swap = get_edit("swap")
    fixed = run_options(swap, skip=tuple(swap.config.field_names()))  # output, preset, face index, overwrite, quiet
    return long_names(fixed) | long_names(config_options(EditConfig))


def mentioned(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@pytest.mark.parametrize("path", list(PAGES), ids=" ".join)
def test_every_option_of_a_command_is_documented_on_its_page(path):
    page = DOCS / PAGES[path]
    text = page.read_text()
    if path in SHARED_WITH:
        assert f"({SHARED_WITH[path]})" in text, f"docs/{page.name} does not link docs/{SHARED_WITH[path]}"
        text += (DOCS / SHARED_WITH[path]).read_text()
    common_text = (DOCS / COMMON).read_text()
    common = common_options()
    flags = long_names(command(path).params)
    missing = sorted(f for f in flags if not mentioned(text, f) and not (f in common and mentioned(common_text, f)))
    assert not missing, f"optimswap {' '.join(path)}: options not explained in docs/{page.name}: {missing}"
    if any(not mentioned(text, f) for f in flags):  # relies on the common page: it must say where that is
        assert f"({COMMON})" in text, f"docs/{page.name} leaves options to docs/{COMMON} but does not link it"


def links(markdown: Path) -> list[Path]:
    """The relative targets of the page's links and images (anchors and web addresses left out)."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", markdown.read_text())
    return [(markdown.parent / t).resolve() for t in targets if "://" not in t and not t.startswith("mailto:")]


def test_readme_and_docs_links_resolve():
    pages = [REPO / "README.md", *DOCS.glob("*.md")]
    broken = [(p.name, str(t.relative_to(REPO))) for p in pages for t in links(p)
              if not t.exists()]
    assert not broken
    gallery = [t for t in links(REPO / "README.md") if t.suffix == ".jpg"]
    assert {t.name for t in gallery} >= {"swap.jpg", "makeup.jpg", "stylize.jpg", "stylegan.jpg"}
    assert sum(t.stat().st_size for t in (DOCS / "images").glob("*")) <= 1.5e6  # the gallery stays small


def test_no_issue_numbers_in_user_docs():
    pages = [REPO / "README.md", *DOCS.glob("*.md")]
    found = [(p.name, m) for p in pages for m in re.findall(r"[Ii]ssue[ -]?#?\d+|#\d+\b", p.read_text())]
    assert not found


def test_the_figure_script_runs_on_tiny_settings(tmp_path, faces):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(DOCS / "make_figures.py"), "--tiny", "--faces", str(faces), "--out",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("swap", "makeup", "stylize", "stylegan"):
        with Image.open(tmp_path / f"{name}.jpg") as figure:
            assert figure.format == "JPEG" and min(figure.size) >= 200
