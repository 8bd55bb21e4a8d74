"""The escape suite: every attack of tests/security/attacks.py against every runtime, each
observed outcome compared with README.md's escape matrix (its cell for that runtime and
attack) and written to the report ($FARM_ESCAPE_REPORT, or escape-report.json in pytest's
temporary directory) that `python -m tests.security.matrix --write` makes that matrix from.

So the README's security claims are tested both ways: a runtime documented as containing an
attack fails here when it lets it through, and a cell saying "not contained" fails when the
runtime contains it (regenerate the matrix then, and say why in the commit).

One executor per runtime for the whole module (tests/security/conftest.py); attacks that only
read what a job printed share that job (attacks.py's batches). FARM_ESCAPE_LOGS=<dir> keeps
every job's log there, to read what an attack did.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.security.attacks import ATTACKS, Attack
from tests.security.harness import Target
from tests.security.matrix import README, read_cells, record

pytestmark = pytest.mark.ray  # the farm under attack runs Ray on loopback (its GCS port is a target)


@pytest.fixture(scope="session")
def escape_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("FARM_ESCAPE_REPORT") or tmp_path_factory.getbasetemp() / "escape-report.json")
    path.unlink(missing_ok=True)  # this run's observations only
    return path


@pytest.fixture(scope="session")
def documented() -> dict[tuple[str, str], str]:
    return read_cells(README.read_text())


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_escape(target: Target, attack: Attack, escape_report: Path, documented: dict[tuple[str, str], str]) -> None:
    try:
        verdict = target.observe(attack)
    except Exception as e:
        record(escape_report, target.runtime, attack.name, "error", f"{type(e).__name__}: {e}")
        raise
    record(escape_report, target.runtime, attack.name, verdict.outcome, verdict.detail)
    assert verdict.outcome != "error", f"{attack.name} could not be tried on {target.runtime}: {verdict.detail}"
    expected = documented.get((attack.name, target.runtime))
    assert expected is not None, (f"README.md's escape matrix has no cell for {attack.name} on {target.runtime} (observed: "
                                  f"{verdict.outcome}); regenerate it: python -m tests.security.matrix --write")  # fmt: skip
    assert verdict.outcome == expected, (
        f"{attack.name} on {target.runtime}: README.md says {expected!r}, observed {verdict.outcome!r} — {verdict.detail}"
    )
