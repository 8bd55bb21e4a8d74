"""One error tree: every exception class in farm and agents is a FarmError, and farm/errors.py's
drawing names each one under the parent it really has (and nothing that is not there)."""

import ast
import builtins
import re
from pathlib import Path

import farm.errors

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("farm", "agents")


def _classes() -> dict[str, list[tuple[str, list[str]]]]:
    """Every class of farm and agents: name -> [(where, the last part of each base's name)]."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                    found.setdefault(node.name, []).append((f"{path.relative_to(REPO)}:{node.lineno}", bases))
    return found


def _third_party_exception(name: str) -> bool:
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type):
        return issubclass(builtin, BaseException)
    return name.endswith(("Error", "Exception"))  # a base from a library (starlette's HTTPException...)


def _exceptions() -> dict[str, tuple[str, list[str]]]:
    """Every exception class: name -> (where, bases)."""
    classes = _classes()
    known: set[str] = set()
    grew = True
    while grew:
        grew = False
        for name, defs in classes.items():
            if name not in known and any(
                b in known or (b not in classes and _third_party_exception(b)) for _, bases in defs for b in bases
            ):
                known.add(name)
                grew = True
    out = {}
    for name in known:
        assert len(classes[name]) == 1, f"two exception classes named {name}: {[w for w, _ in classes[name]]}"
        out[name] = classes[name][0]
    return out


def _drawing() -> dict[str, str | None]:
    """The drawing in farm/errors.py's docstring: name -> its parent there (None for the root)."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in (farm.errors.__doc__ or "").splitlines():
        m = re.match(r"^(    (?:[│ ]   |[├└]── )*)([A-Z]\w+)\b", line)
        if not m or not (m[2] == "FarmError" or m[1].rstrip().endswith("──")):
            continue
        depth = (len(m[1]) - 4) // 4
        del stack[depth:]
        parents[m[2]] = stack[-1] if stack else None
        stack.append(m[2])
    return parents


def test_every_exception_class_is_a_farm_error():
    exceptions = _exceptions()
    assert "FarmError" in exceptions and "HeadTooLarge" in exceptions  # the walk finds them at all

    def reaches_root(name: str) -> bool:
        return name == "FarmError" or any(b in exceptions and reaches_root(b) for b in exceptions[name][1])

    outside = sorted(f"{name} ({where})" for name, (where, _) in exceptions.items() if not reaches_root(name))
    assert not outside, f"exception classes outside the FarmError tree: {outside}"


def test_the_drawing_names_every_exception_class_under_its_parent():
    exceptions, drawn = _exceptions(), _drawing()
    assert drawn["FarmError"] is None
    missing = sorted(set(exceptions) - set(drawn))
    assert not missing, f"farm/errors.py's drawing does not name {missing}"
    extra = sorted(set(drawn) - set(exceptions))
    assert not extra, f"farm/errors.py's drawing names classes that do not exist: {extra}"
    for name, parent in drawn.items():
        if parent is not None:
            assert parent in exceptions[name][1], f"{name} is drawn under {parent}, but its bases are {exceptions[name][1]}"
