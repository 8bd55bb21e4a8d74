"""One seam for Ray (issue 29): at most two modules of farm and agents import `ray` (the seam,
farm/ray_seam.py, and `farm up`'s start-up, farm/embedded.py); the modules that define actors
import without Ray; `RayFleet` and `StubFleet` are both `Fleet`s."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from farm.ray_seam import Fleet, RayFleet, StubFleet, executor_name, warden_name

REPO = Path(__file__).resolve().parents[2]


def imports_ray(tree: ast.AST) -> bool:
    """`import ray`, `import ray.x`, `from ray[.x] import …`, at any level (in functions too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "ray" or a.name.startswith("ray.") for a in node.names):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and (node.module == "ray" or node.module.startswith("ray."))
        ):
            return True
    return False


def ray_importers() -> list[str]:
    found = []
    for package in ("farm", "agents"):
        for path in sorted((REPO / package).rglob("*.py")):
            if imports_ray(ast.parse(path.read_text(), str(path))):
                found.append(path.relative_to(REPO).as_posix())
    return found


def test_the_counter_sees_every_form_of_import():
    for code in (
        "import ray",
        "import ray.util",
        "from ray.util.scheduling_strategies import X",
        "def f():\n    from ray import get",
    ):
        assert imports_ray(ast.parse(code)), code
    for code in ("import rayon", "from farm import ray_seam", "from .ray import x", "x = 'import ray'"):
        assert not imports_ray(ast.parse(code)), code


def test_at_most_two_modules_import_ray():
    found = ray_importers()
    assert len(found) <= 2, f"ray is imported by {found}: go through farm/ray_seam.py"
    assert "farm/ray_seam.py" in found


@pytest.mark.parametrize("module", ["farm.ray_seam", "farm.actors", "farm.autoscale.live", "agents.executor", "agents.warden"])
def test_modules_with_actors_import_without_ray(module):
    code = f"import sys, {module}; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    assert out == "False"


def test_the_seams_load_no_agents():
    code = "import sys, farm.ray_seam, farm.actors, farm.autoscale.live; print(any(m == 'agents' or m.startswith('agents.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("fleet", [RayFleet, StubFleet])
def test_both_fleets_have_the_protocols_operations(fleet):
    wanted = {name: inspect.signature(getattr(Fleet, name)) for name in ("start", "drain", "kill", "request", "reap")}
    for name, signature in wanted.items():
        assert inspect.signature(getattr(fleet, name)) == signature, name


def test_the_stub_fleet_records_what_it_is_asked():
    fleet: Fleet = StubFleet()
    assert fleet.start("default", 2) == ["default-0", "default-1"]
    assert fleet.start("big", 1) == ["big-2"]
    fleet.drain(["default-0"])
    fleet.kill(["big-2"])
    fleet.request({"default": 2})
    fleet.reap()
    assert isinstance(fleet, StubFleet)
    assert (fleet.started, fleet.drained, fleet.killed, fleet.requested) == (
        ["default-0", "default-1", "big-2"], ["default-0"], ["big-2"], [{"default": 2}])  # fmt: skip


def test_actor_names():
    assert executor_name("default-abc") == "executor-default-abc"
    assert warden_name("f00d", "node-1") == "warden-f00d-node-1"
