"""Job secrets: resolving references to tenant-held secrets, and masking values in logs.

Pure module. Values shorter than MIN_MASK characters are not masked (masking "1" would
mask every digit in the log); the docs say to keep secrets longer than that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from farm.errors import InvalidInput
from farm.models import JobSpec, SecretRef
from farm.settings import TenantConfig

MIN_MASK = 4
MASK = "***"


def resolve(spec: JobSpec, tenant: TenantConfig | None) -> dict[str, str]:
    """The job's secrets as name -> value, references looked up in the tenant's store."""
    held = tenant.secrets if tenant else {}
    out = {}
    for name, value in spec.secrets.items():
        if isinstance(value, SecretRef):
            if value.ref not in held:
                raise InvalidInput(f"no secret named {value.ref!r} for this tenant", ("body", "secrets", name))
            out[name] = held[value.ref].get_secret_value()
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Shape:
    """Text masked by its form, not its value: wherever `whole` matches; and, at the end of
    what a streaming caller has, from the first `start` in its trailing run of `alphabet`
    characters (at most `most`): a match may still be being written."""

    whole: re.Pattern[str]
    start: str
    alphabet: str  # a regex character class of the characters a match is made of
    most: int

    def unfinished(self, text: str) -> int:
        """How many trailing characters of `text` may begin a match."""
        window = text[-self.most :]
        other = re.search(f"[^{self.alphabet}]", window[::-1])
        run = window if other is None else window[len(window) - other.start() :]
        at = run.find(self.start)
        return 0 if at < 0 else len(run) - at


# A JWT (an ID token farm gave a step, farm.identity): base64url header and payload that are
# JSON objects ("eyJ" is `{"`), and a signature.
JWT = Shape(re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+"), "eyJ", "A-Za-z0-9_.-", 16 * 1024)


class Masker:
    """Replaces secret values (and `shapes`) in text. `hold` is how many trailing characters
    a streaming caller must keep back, so a value split across two chunks is still caught
    whole; `split` does that for it."""

    def __init__(self, values: list[str], shapes: Sequence[Shape] = ()) -> None:
        # Longest first, so a value containing another is masked whole.
        self.values = sorted({v for v in values if len(v) >= MIN_MASK}, key=len, reverse=True)
        self.hold = max((len(v) for v in self.values), default=1) - 1
        self.shapes = tuple(shapes)

    def __call__(self, text: str) -> str:
        for v in self.values:
            text = text.replace(v, MASK)
        for shape in self.shapes:
            text = shape.whole.sub(MASK, text)
        return text

    def split(self, text: str) -> tuple[str, str]:
        """`text` for a streaming caller: what it may send now (masked), and the tail to keep
        for its next chunk: a possible start of a value (masked) or of a shape (not yet)."""
        cut = len(text) - max((shape.unfinished(text) for shape in self.shapes), default=0)
        head = self(text[:cut])
        keep = min(self.hold, len(head)) if self.values else 0
        return head[: len(head) - keep], head[len(head) - keep :] + text[cut:]
