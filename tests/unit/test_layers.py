"""Layering: pure modules import no I/O library (checked in a fresh interpreter)."""

import subprocess
import sys

import pytest

PURE = [
    "farm.models", "farm.errors", "farm.fieldnames", "farm.settings", "farm.store.keys", "farm.store.stats", "farm.secrets",
    "farm.autoscale.policy", "farm.autoscale.forecast", "farm.sim.trace", "farm.sim.simulator", "farm.autoscale.peers", "farm.sim.tune",
]
IO = ["redis", "docker", "ray", "fastapi", "httpx"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {IO!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} pulls in {out}"


def _lint_copy(tmp_path, bad: str | None = None) -> subprocess.CompletedProcess:
    """lint-imports on a copy of farm and agents (with `bad` appended to farm/models.py)."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for package in ("farm", "agents"):
        shutil.copytree(repo / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "pyproject.toml", tmp_path / "pyproject.toml")
    if bad:
        with (tmp_path / "farm" / "models.py").open("a") as f:
            f.write(f"\n{bad}\n")
    tool = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(tool), "--no-cache"], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_import_contracts_hold_and_a_wrong_import_breaks_them(tmp_path):
    """The contracts in pyproject.toml pass on the code as it is, and fail, naming the
    contract, when the core reaches for Redis or the store."""
    clean = _lint_copy(tmp_path / "clean")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    broken = _lint_copy(tmp_path / "broken", "import redis  # noqa: E402\nfrom farm.store import keys  # noqa: E402")
    assert broken.returncode != 0
    assert "Only farm.store talks to Redis BROKEN" in broken.stdout
    assert "The pure core does no I/O and knows nothing above it BROKEN" in broken.stdout
    assert "farm.models -> redis" in broken.stdout
