"""No import cycle in farm/ or agents/: the module graph, read with ast (module-level and
function-local imports alike; an `if TYPE_CHECKING:` block runs no import), is acyclic.

import-linter's contracts hold the layers (pyproject.toml, tests/unit/test_layers.py);
this holds the rest: two modules that import each other, even from inside a function, are
one module in two files, and the first of them to be imported runs with the other half-made.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("farm", "agents")

# Edges left out, each closing a known cycle to undo, with the reason (none today; a test
# below fails when one listed here is gone or closes no cycle any more).
KNOWN: set[tuple[str, str]] = set()


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.AST, skip: set[int]) -> list[ast.Import | ast.ImportFrom]:
    out = []
    for node in ast.walk(tree):  # breadth-first: an `if TYPE_CHECKING:` comes before the imports in it
        if isinstance(node, ast.If) and _type_checking(node):
            skip.update(id(n) for n in ast.walk(node))
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skip:
            out.append(node)
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of farm and agents that this module imports: `from p import m` counts as
    importing p.m when that is a module (as import-linter counts it), else p."""

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    tree = ast.parse(path.read_text(), str(path))
    targets = []
    for node in _imports(tree, set()):
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
            continue
        base = node.module or ""
        if node.level:
            here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
        for alias in node.names:
            targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for t in targets if (m := owner(t)) is not None and m != name}


def graph(root: Path = REPO, leave_out: set[tuple[str, str]] = KNOWN) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imported(name, path, known) - {b for a, b in leave_out if a == name} for name, path in known.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as the modules along it (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges[nxt])))
    return None


def test_farm_and_agents_have_no_import_cycle():
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found)


def test_every_edge_left_out_still_closes_a_cycle():
    """An edge left out above that is gone, or no longer in a cycle, comes off the list."""
    edges = graph(leave_out=set())
    for a, b in sorted(KNOWN):
        assert b in edges[a], f"{a} -> {b} is gone: take it off KNOWN"
        assert cycle({**graph(), a: {b}}) is not None, f"{a} -> {b} closes no cycle now: take it off KNOWN"


def test_the_walk_sees_function_local_imports_and_names_the_cycle(tmp_path):
    """A planted cycle through a function-local import is found and named; an import under
    TYPE_CHECKING is not one."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "farm" / "a.py").write_text("from farm import b\n")
    (tmp_path / "farm" / "b.py").write_text("def f():\n    from farm.c import x\n")
    (tmp_path / "farm" / "c.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    import farm.a\nx = 1\n")
    assert cycle(graph(tmp_path, set())) is None
    (tmp_path / "farm" / "c.py").write_text("x = 1\n\ndef g():\n    from .a import y\n")
    assert cycle(graph(tmp_path, set())) == ["farm.a", "farm.b", "farm.c", "farm.a"]
