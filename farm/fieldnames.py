"""The fields a schema accepts at a place in a document, and the one a refused name was
probably meant to be: the "did you mean" of a 422 (farm.api.errors) and of the CLI.

    suggest(JobSpec, ["steps", 0, "timout_s"]) -> "timeout_s"
    suggest(LivePolicy, ["predictive", "target_p95"]) -> "target_p95_s"

A location is what pydantic puts in an error's `loc` below the body: field names (or
aliases), list and tuple indexes, dict keys, and a discriminated union's tag (or a union
member's class name), which names the member the rest of the location is in. Pure: types in,
names out; a location the schema does not lead along gives no names and no suggestion.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _members(tp: Any) -> list[Any]:
    """A union's members (None left out); [tp] for anything else."""
    if get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in get_args(tp) if a is not type(None)]
    return [tp]


def _tags(model: type[BaseModel]) -> set[str]:
    """What names a union member in a location: its class name and its Literal fields' values
    (the discriminator's among them)."""
    tags = {model.__name__}
    for field in model.model_fields.values():
        if get_origin(_unwrap(field.annotation)) is Literal:
            tags.update(str(v) for v in get_args(_unwrap(field.annotation)))
    return tags


def _step(tp: Any, part: str | int) -> Any:
    """The type at `part` below `tp`, or None."""
    tp = _unwrap(tp)
    members = _members(tp)
    if len(members) > 1:
        if isinstance(part, str):
            tagged = [m for m in members if _is_model(m) and part in _tags(m)]
            if len(tagged) == 1:
                return tagged[0]
        found = [t for t in (_step(m, part) for m in members) if t is not None]
        return found[0] if found else None
    tp = members[0]
    if _is_model(tp):
        for name, field in tp.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, set, frozenset, Sequence) and args and isinstance(part, int):
        return args[0]
    if origin is tuple and args and isinstance(part, int):
        return args[0] if len(args) == 2 and args[1] is Ellipsis else (args[part] if part < len(args) else None)
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def known(tp: Any, where: Sequence[str | int]) -> list[str]:
    """The field names the model at `where` below `tp` accepts ([] if none is there)."""
    for part in where:
        tp = _step(tp, part)
        if tp is None:
            return []
    names: list[str] = []
    for member in _members(_unwrap(tp)):
        if _is_model(member):
            names += [n for n in member.model_fields if n not in names]
    return names


def suggest(tp: Any, loc: Sequence[str | int]) -> str | None:
    """The known field closest to the refused name at the end of `loc`, if one is close."""
    if not loc or not isinstance(loc[-1], str):
        return None
    close = difflib.get_close_matches(loc[-1], known(tp, loc[:-1]), n=1)
    return close[0] if close else None


def unknown_field(tp: Any, loc: Sequence[str | int]) -> str:
    """The message for a field the schema does not have: 'unknown field (did you mean X?)'."""
    close = suggest(tp, loc)
    return "unknown field" + (f" (did you mean {close}?)" if close else "")
