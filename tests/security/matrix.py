"""The escape matrix in README.md: runtime x attack -> contained / not contained / n/a.

The README's block between `<!-- escape-matrix:begin -->` and `<!-- escape-matrix:end -->` is
generated from the escape suite's report (tests/security/test_escapes.py writes it as it
runs: $FARM_ESCAPE_REPORT, or escape-report.json in pytest's temporary directory), never
written by hand; the suite reads its expectations back from it, so a runtime that lets an
attack through where the README says contained fails CI, and so does one that contains
what the README says it does not.

    python -m tests.security.matrix --write [report.json]   regenerate the block (cells the
                                                              report lacks keep their value)
    python -m tests.security.matrix --check [report.json]   exit 1 when the report and the block differ

An `error` (the attack could not be tried) is never written as a verdict: --write refuses
it unless told `--allow-errors`, and writes it then as `error`, which the suite never meets.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
from pathlib import Path

from tests.security.attacks import ATTACKS, RUNTIMES

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- escape-matrix:begin -->", "<!-- escape-matrix:end -->"
OUTCOMES = ("contained", "not contained", "n/a", "error")
Cells = dict[tuple[str, str], str]  # (attack, runtime) -> outcome


def default_report() -> Path:
    """$FARM_ESCAPE_REPORT, else escape-report.json in the last pytest run's temporary directory."""
    if path := os.environ.get("FARM_ESCAPE_REPORT"):
        return Path(path)
    return Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}" / "pytest-current" / "escape-report.json"


def load_report(path: Path) -> tuple[Cells, dict[tuple[str, str], str]]:
    """(outcomes, details) from a report file."""
    data = json.loads(path.read_text())
    cells, details = {}, {}
    for runtime, attacks in data["results"].items():
        for attack, got in attacks.items():
            cells[attack, runtime] = got["outcome"]
            details[attack, runtime] = got.get("detail", "")
    return cells, details


def record(path: Path, runtime: str, attack: str, outcome: str, detail: str) -> None:
    """Add one observation to the report file (created if absent)."""
    data = json.loads(path.read_text()) if path.exists() else {"version": 1, "results": {}}
    data["results"].setdefault(runtime, {})[attack] = {"outcome": outcome, "detail": detail}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def _block(text: str) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block (in its 'Security model' section)")
    return start + len(BEGIN), end


def read_cells(text: str) -> Cells:
    """The README block's cells: rows start with the attack's name in backticks."""
    start, end = _block(text)
    cells: Cells = {}
    header: list[str] = []
    for line in text[start:end].splitlines():
        if not line.startswith("|"):
            continue
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if cols[0] == "attack":
            header = [c.strip("`") for c in cols[1:]]
            continue
        if not cols[0].startswith("`") or not header:
            continue
        attack = cols[0].split("`")[1]
        for runtime, cell in zip(header, cols[1:], strict=False):
            cells[attack, runtime] = cell.replace("*", "").strip()
    return cells


def render(cells: Cells) -> str:
    def cell(attack: str, runtime: str) -> str:
        got = cells.get((attack, runtime), "?")
        return f"**{got}**" if got == "not contained" else got

    rows = [
        "",
        "<!-- generated from the escape suite's report by `python -m tests.security.matrix --write`; do not edit -->",
        "**What the escape suite observed** (`tests/security`: every attack against every runtime, judged on the node; "
        "CI fails when a runtime does otherwise than this table says). A row counts its own route only: an escape to "
        "the node's root (`host-root`) reaches everything else too.",
        "",
        "| attack | " + " | ".join(f"`{r}`" for r in RUNTIMES) + " |",
        "|---|" + "---|" * len(RUNTIMES),
    ]
    rows += [f"| `{a.name}`: {a.title} | " + " | ".join(cell(a.name, r) for r in RUNTIMES) + " |" for a in ATTACKS]
    return "\n".join(rows) + "\n"


def write(readme: Path, report: Cells, *, allow_errors: bool = False) -> Cells:
    text = readme.read_text()
    errors = sorted(k for k, v in report.items() if v == "error")
    if errors and not allow_errors:
        raise SystemExit(f"the report has errors (attacks that could not be tried), not verdicts: {errors}; "
                         "fix them, or pass --allow-errors to write them as `error`")  # fmt: skip
    unknown = sorted(k for k, v in report.items() if v not in OUTCOMES)
    if unknown:
        raise SystemExit(f"unknown outcomes in the report: {unknown}")
    cells = {**read_cells(text), **report}
    start, end = _block(text)
    readme.write_text(text[:start] + render(cells) + text[end:])
    return cells


def diff(readme: Path, report: Cells) -> list[str]:
    documented = read_cells(readme.read_text())
    return [f"{attack} on {runtime}: README says {documented.get((attack, runtime), 'nothing')}, observed {got}"
            for (attack, runtime), got in sorted(report.items()) if documented.get((attack, runtime)) != got]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.matrix", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate README.md's escape matrix from the report")
    mode.add_argument("--check", action="store_true", help="compare the report with README.md's escape matrix")
    parser.add_argument("report", nargs="?", type=Path, default=None, help="the suite's report (default: %(default)s)")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--allow-errors", action="store_true")
    args = parser.parse_args(argv)
    path = args.report or default_report()
    if not path.exists():
        print(f"no report at {path}: run `pytest tests/security` first (FARM_ESCAPE_REPORT names where it goes)", file=sys.stderr)
        return 2
    cells, _ = load_report(path)
    if args.write:
        write(args.readme, cells, allow_errors=args.allow_errors)
        print(f"wrote {len(cells)} observed cells into {args.readme}'s escape matrix")
        return 0
    problems = diff(args.readme, cells)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
