"""README.md's escape matrix and its generator (tests/security/matrix.py): pure, no runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.attacks import ATTACKS, RUNTIMES
from tests.security.matrix import BEGIN, END, README, diff, load_report, read_cells, record, render, write


def test_the_readme_matrix_has_a_cell_for_every_attack_on_every_runtime_and_nothing_else():
    cells = read_cells(README.read_text())
    want = {(a.name, r) for a in ATTACKS for r in RUNTIMES}
    assert set(cells) == want, f"regenerate it: python -m tests.security.matrix --write ({sorted(set(cells) ^ want)[:5]})"
    assert set(cells.values()) <= {"contained", "not contained", "n/a"}, "an `error` is not a verdict"
    na = {(a.name, r) for a in ATTACKS for r in RUNTIMES if r not in a.runtimes}
    assert {k for k, v in cells.items() if v == "n/a"} == na


def test_write_then_read_gives_the_report_back_and_keeps_what_it_lacks(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{BEGIN}\n{END}\n\nafter\n")
    first = {(a.name, r): "contained" for a in ATTACKS for r in RUNTIMES}
    write(readme, first)
    write(readme, {(ATTACKS[0].name, "local"): "not contained"})  # a partial report
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert read_cells(text) == {**first, (ATTACKS[0].name, "local"): "not contained"}
    assert "**not contained**" in render(read_cells(text))
    assert diff(readme, {(ATTACKS[0].name, "docker"): "not contained"}) == [
        f"{ATTACKS[0].name} on docker: README says contained, observed not contained"
    ]


def test_errors_are_not_written_as_verdicts(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    with pytest.raises(SystemExit, match="errors"):
        write(readme, {(ATTACKS[0].name, "local"): "error"})
    write(readme, {(ATTACKS[0].name, "local"): "error"}, allow_errors=True)
    assert read_cells(readme.read_text())[ATTACKS[0].name, "local"] == "error"


def test_the_report_collects_observations(tmp_path: Path):
    report = tmp_path / "r.json"
    record(report, "docker", "mount", "contained", "refused")
    record(report, "dind", "mount", "not contained", "through its daemon")
    cells, details = load_report(report)
    assert cells == {("mount", "docker"): "contained", ("mount", "dind"): "not contained"}
    assert details["mount", "dind"] == "through its daemon"
