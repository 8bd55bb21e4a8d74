"""Job secrets: resolving references to tenant-held secrets, and masking values in logs.

Pure module. Values shorter than MIN_MASK characters are not masked (masking "1" would
mask every digit in the log); the docs say to keep secrets longer than that.
"""

from __future__ import annotations

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


class Masker:
    """Replaces secret values in text. `hold` is how many trailing characters a streaming
    caller must keep back, so a value split across two chunks is still caught whole."""

    def __init__(self, values: list[str]) -> None:
        # Longest first, so a value containing another is masked whole.
        self.values = sorted({v for v in values if len(v) >= MIN_MASK}, key=len, reverse=True)
        self.hold = max((len(v) for v in self.values), default=1) - 1

    def __call__(self, text: str) -> str:
        for v in self.values:
            text = text.replace(v, MASK)
        return text
