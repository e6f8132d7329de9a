"""Issue #12's corpus against every command: no traceback, one line naming the file or option, exit 2 for bad
input, nothing partial or temporary left behind, no existing file changed."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from bad_inputs import WOULD_RUN, Case, all_cases, build_corpus, materialize, run_cli, snapshot

from optimswap.io import IMAGE_SUFFIXES
from optimswap.io.image import is_temp


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, faces):
    return build_corpus(tmp_path_factory.mktemp("corpus"), faces)


def check_case(case: Case, corpus, out) -> None:
    args = materialize(case, corpus, out)
    with case.around(out) if case.around else contextlib.nullcontext():
        before = snapshot(out)
        code, stdout, err = run_cli(args, dry=case.dry)
        after = snapshot(out)
    assert "Traceback" not in err and "internal error" not in err, (case.name, err)
    if case.code is None:
        assert code in (2, WOULD_RUN), (case.name, code, err)
    else:
        assert code == case.code, (case.name, code, err)
    if code not in (0, WOULD_RUN):
        assert case.names in err.strip().splitlines()[-1], (case.name, err)
    assert case.says in stdout + err, (case.name, stdout, err)
    if case.quiet:
        assert err == "", (case.name, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (case.name, err)
        assert after == before, f"{case.name}: files changed by a refused run"
    assert not [p for p in after if p.split("/")[-1].startswith(".")], f"{case.name}: temp files left: {after}"
    kept = {k: v for k, v in before.items() if not is_temp(k)}  # a killed writer's temps are to go
    assert all(after.get(k) == v for k, v in kept.items()), f"{case.name}: an existing file changed"
    if code == 0 and case.args[0] not in ("eval", "fetch"):
        pictures = [p for p in after if Path(p).suffix in IMAGE_SUFFIXES and p not in before]
        assert pictures and all(str(Path(p).with_suffix(".json")) in after for p in pictures), (case.name, after)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = all_cases(Path(os.environ["OPTIMSWAP_FACES"]))
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])


def test_case(case, corpus, tmp_path):
    check_case(case, corpus, tmp_path / "out")
