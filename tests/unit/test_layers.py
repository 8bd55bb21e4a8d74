"""Layering: pure modules import no I/O library (checked in a fresh interpreter), and each
import-linter contract in pyproject.toml holds on the code and breaks on a planted import."""

import subprocess
import sys

import pytest

PURE = [
    "farm.models", "farm.errors", "farm.fieldnames", "farm.settings", "farm.store.keys", "farm.store.stats", "farm.secrets",
    "farm.autoscale.policy", "farm.autoscale.forecast", "farm.sim.trace", "farm.sim.simulator", "farm.autoscale.peers", "farm.sim.tune",
    "farm.autoscale.registry", "farm.autoscale.own", "farm.autoscale.kinds", "farm.autoscale.document", "farm.autoscale.demand",
    "farm.sim.history", "farm.notify",
]
IO = ["redis", "docker", "ray", "fastapi", "httpx"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {IO!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} pulls in {out}"


def _lint_copy(tmp_path, bad: str | None = None, into: str = "farm/models.py") -> subprocess.CompletedProcess:
    """lint-imports on a copy of farm and agents (with `bad` appended to the module `into`)."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for package in ("farm", "agents"):
        shutil.copytree(repo / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "pyproject.toml", tmp_path / "pyproject.toml")
    if bad:
        with (tmp_path / into).open("a") as f:
            f.write(f"\n{bad}\n")
    tool = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(tool), "--no-cache"], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _broken(result: subprocess.CompletedProcess) -> set[str]:
    """The names of the contracts lint-imports reported broken (it wraps long lines)."""
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    said = " ".join(result.stdout.split())
    return {c["name"] for c in config["tool"]["importlinter"]["contracts"] if f"{c['name']} BROKEN" in said}


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


CAPACITY = "The capacity wing: farm.sim on the policies, in layers with no cycle"
LAYERS = "Layers: the CLI and the API on top, the loops, the store, the core"

# One wrong import per contract: (where it goes, the import, the contracts it breaks, what
# lint-imports says of it)
PLANTED = [
    pytest.param("farm/autoscale/forecast.py", "from farm.autoscale.policy import decide", {CAPACITY},
                 "farm.autoscale.forecast is not allowed to import farm.autoscale.policy", id="capacity-cycle"),
    pytest.param("farm/autoscale/peers.py", "from farm.autoscale import own", {CAPACITY},
                 "farm.autoscale.peers is not allowed to import farm.autoscale.own", id="capacity-siblings"),
    pytest.param("farm/autoscale/policy.py", "from farm.sim import trace", {CAPACITY, LAYERS},
                 "farm.autoscale.policy is not allowed to import farm.sim", id="capacity-imports-sim"),
    pytest.param("farm/store/keys.py", "from farm.sim.trace import Trace", {"farm.store never imports farm.sim"},
                 "farm.store.keys -> farm.sim.trace", id="store-sim"),
    pytest.param("agents/runtimes/base.py", "from agents import attempt", {"The agents in layers: the runtimes below attempts and the warden"},
                 "agents.runtimes.base -> agents.attempt", id="agents-layers"),
    pytest.param("farm/api/pools.py", "from farm.api.queue import router", {"The API's routers are independent of each other"},
                 "farm.api.pools is not allowed to import farm.api.queue", id="routers"),
]  # fmt: skip


@pytest.mark.parametrize(("into", "bad", "contracts", "says"), PLANTED)
def test_each_contract_breaks_on_a_planted_import(tmp_path, into, bad, contracts, says):
    result = _lint_copy(tmp_path, f"{bad}  # noqa: E402,F401", into)
    assert result.returncode != 0, result.stdout + result.stderr
    assert _broken(result) == contracts, result.stdout
    assert says in " ".join(result.stdout.split()), result.stdout
