"""Layering: pure modules import no I/O library (checked in a fresh interpreter)."""

import subprocess
import sys

import pytest

PURE = [
    "farm.models", "farm.errors", "farm.settings", "farm.store.keys", "farm.store.stats", "farm.secrets",
    "farm.autoscale.policy", "farm.autoscale.forecast", "farm.sim.trace", "farm.sim.simulator", "farm.sim.peers", "farm.sim.tune",
]
IO = ["redis", "docker", "ray", "fastapi", "httpx"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {IO!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} pulls in {out}"
