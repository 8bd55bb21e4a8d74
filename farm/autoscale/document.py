"""What a policy learned, as a document: the readers and the number writer. Pure.

The autoscaler keeps each pool's Memory in Redis so a restarted one resumes (the store's
farm.store.learned): as a plain JSON document, never pickle, so reading one runs no code.
A document names its layout (`schema`) and the policy's kind:

    {"schema": 1, "kind": "predictive",
     "limits": {"below_since": null | t, "window_start": t, "started_in_window": n},
     "own": null | the kind's own memory}

where `own` is null for `reactive` (it learns nothing), a list of each window's
{"open_until", "next_open", "checked"} (or null, not yet checked) for `scheduled`, and
Forecaster.to_doc() for `predictive`. JSON has no infinities: "inf" and "-inf" stand for
them where a field may hold one. Changing a layout means a new schema number; a document
of another number, or one that does not read as its schema says (wrong types, lengths,
shapes, values out of range), raises MemoryDocError, and the caller starts afresh.

This module knows no policy: the envelope is read by farm.autoscale.policy.Memory, each
kind's `own` by the kind's codec (farm.autoscale.registry), with the readers below. It is
the bottom of the capacity core, beside farm.autoscale.kinds and farm.autoscale.demand (it
imports only farm.errors).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from farm.errors import FarmError

MEMORY_SCHEMA = 1


class MemoryDocError(FarmError):
    """A document of learned memory this farm cannot take: another schema version, or malformed."""


class UnkeepableMemory(FarmError):
    """Learned memory that cannot be written as a document (a NaN, an array of the wrong
    shape, the memory of a kind that keeps none): a bug; the autoscaler logs it and scales on."""


def doc_number(x: float) -> int | float | str:
    """A number for a document: an int stays an int, a float a float (JSON gives both back
    exactly), an infinity becomes "inf" or "-inf"."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"not a number: {x!r}")
    if isinstance(x, numbers.Integral):
        return int(x)
    x = float(x)
    if math.isnan(x):
        raise UnkeepableMemory("NaN in learned memory")
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


_INT64 = 2**63


def show(v: Any) -> str:
    """A value as an error message quotes it: its repr, cut at 40 characters."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def read_number(v: Any, what: str, *, lo: float | None = None, infinite: bool = False) -> int | float:
    """A finite number (or, if `infinite`, "inf"/"-inf") from a document, at least `lo`."""
    if type(v) is int and -_INT64 <= v < _INT64 or type(v) is float and math.isfinite(v):
        out: int | float = v
    elif infinite and v in ("inf", "-inf"):
        out = float(v)
    else:
        raise MemoryDocError(f"{what}: {show(v)} is not a {'' if infinite else 'finite '}number")
    if lo is not None and out < lo:
        raise MemoryDocError(f"{what}: {show(v)} is below {lo:g}")
    return out


def read_int(v: Any, what: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer from a document, in [lo, hi)."""
    if type(v) is not int or not -_INT64 <= v < _INT64:
        raise MemoryDocError(f"{what}: {show(v)} is not an integer")
    if lo is not None and v < lo or hi is not None and v >= hi:
        raise MemoryDocError(f"{what}: {v} is out of range")
    return v


def read_bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise MemoryDocError(f"{what}: {show(v)} is not true or false")
    return v


def read_list(v: Any, what: str, *, length: int | None = None, most: int | None = None) -> list[Any]:
    """A list from a document: of exactly `length` items, or at most `most`."""
    if type(v) is not list:
        raise MemoryDocError(f"{what}: {show(v)} is not a list")
    if length is not None and len(v) != length or most is not None and len(v) > most:
        raise MemoryDocError(f"{what}: a list of {len(v)}, not {length if length is not None else f'at most {most}'}")
    return v


def read_object(v: Any, what: str, names: tuple[str, ...]) -> dict[str, Any]:
    """An object from a document with exactly these fields."""
    if type(v) is not dict:
        raise MemoryDocError(f"{what}: {show(v)} is not an object")
    if set(v) != set(names):
        missing, extra = sorted(set(names) - set(v)), sorted(set(v) - set(names))
        raise MemoryDocError(f"{what}: " + "; ".join(
            ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has unknown {', '.join(map(show, extra))}"] if extra else [])))  # fmt: skip
    return v
