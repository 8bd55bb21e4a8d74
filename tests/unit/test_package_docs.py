"""Every package's docstring lists what is in it, one line a module (or `name/` for a
subpackage), indented: a module added or removed without saying so fails here."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for top in ("farm", "agents") for p in (REPO / top).rglob("__init__.py"))
ENTRY = re.compile(r"^    (\w+/?)  +\S", re.MULTILINE)  # "    name        what it is"


def _contents(package: Path) -> set[str]:
    modules = {p.stem for p in package.glob("*.py") if p.name != "__init__.py"}
    return modules | {f"{p.parent.name}/" for p in package.glob("*/__init__.py")}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_package_docstring_lists_every_module(package):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()), clean=False) or ""
    listed = set(ENTRY.findall(doc))
    there = _contents(package)
    assert not there - listed, f"{package.relative_to(REPO)}/__init__.py does not list {sorted(there - listed)}"
    assert not listed - there, f"{package.relative_to(REPO)}/__init__.py lists {sorted(listed - there)}, which are not there"
