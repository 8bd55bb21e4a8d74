"""README.md's tables of the capacity policies' fields, made from the models themselves
(farm/autoscale/kinds.py: each field's type, bounds, default and description), so the
README says what the code accepts. `python -m tests.unit.policy_tables --write` rewrites
them between their markers; tests/unit/test_policy_tables.py fails when they differ.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from farm.autoscale.kinds import PredictivePolicy, ReactivePolicy, ScheduledPolicy, Window

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- policy-fields:begin -->", "<!-- policy-fields:end -->"
LIVE = (ReactivePolicy, ScheduledPolicy, PredictivePolicy)
_WORDS = {int: "integer", float: "number", bool: "true or false", str: "text"}
_BOUNDS = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"),
           (annotated_types.Lt, "lt", "<"))  # fmt: skip


def _number(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def _kind_of(annotation: Any) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        words = [_kind_of(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(words) + (" or none" if type(None) in get_args(annotation) else "")
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return f"list of {item.__name__.lower()}s (below)" if isinstance(item, type) and issubclass(item, BaseModel) else "list"
    if get_origin(annotation) is Literal:
        return " or ".join(f"`{v}`" for v in get_args(annotation))
    return _WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def allowed(field: FieldInfo) -> str:
    """The field's type and bounds: "integer ≥ 0", "number > 0.5, < 1", "integer ≥ 1 or none"."""
    bounds = [f"{sign} {_number(getattr(m, attr))}" for m in field.metadata for cls, attr, sign in _BOUNDS if isinstance(m, cls)]
    words = _kind_of(field.annotation)
    if not bounds:
        return words
    first, _, rest = words.partition(" or ")
    return f"{first} {', '.join(bounds)}" + (f" or {rest}" if rest else "")


def default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    return f"`{value}`" if isinstance(value, str) else f"`{value!r}`"


def table(model: type[BaseModel], names: list[str]) -> list[str]:
    rows = ["| field | default | allowed | meaning |", "|---|---|---|---|"]
    for name in names:
        field = model.model_fields[name]
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {default(field)} | {allowed(field)} | {meaning} |")
    return rows


def common() -> list[str]:
    """The fields every live kind has (besides `kind`), in the models' order."""
    return [n for n in ReactivePolicy.model_fields if n != "kind" and all(n in m.model_fields for m in LIVE)]


def render() -> str:
    shared = common()
    out = [BEGIN, "<!-- generated from farm/autoscale/kinds.py by `python -m tests.unit.policy_tables --write`; do not edit -->",
           "", "Every kind:", "", *table(ReactivePolicy, shared)]  # fmt: skip
    for model in LIVE:
        kind = model.model_fields["kind"].default
        own = [n for n in model.model_fields if n not in shared and n != "kind"]
        out += ["", f"`kind: {kind}` adds:", "", *table(model, own)]
    out += ["", "Each of `windows`:", "", *table(Window, list(Window.model_fields)), END]
    return "\n".join(out)


def current(text: str) -> str:
    """The tables as README.md has them, markers included."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def main(argv: list[str]) -> int:
    text = README.read_text()
    if "--write" in argv:
        README.write_text(text.replace(current(text), render()))
        return 0
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
