"""Job identity (OIDC): what an attempt's ID token says, and which signing keys sign and
are published when. Pure: the clock comes in; Redis is farm.store.identity's, HTTP is
farm.api.identity's.

A token speaks for one attempt of one job, with what farm knows and the job cannot change:
its tenant, pool, git source, run, attempt, and the trust tier of the token it was submitted
with (farm/cache/scope.py). Relying parties (a cloud's STS, Vault) check it against the JWKS
farm serves and decide on its claims, `tier` first: a pull request's job is submitted with
its tenant's ordinary token, so its ID token says `unprotected` whatever it asks.

Keys, RS256 (RSA 2048): the one algorithm OpenID Connect Core (§15.1) has every provider
support, so every relying party takes it. A key signs while it is the newest; when it is
`rotate_ms` old a new one replaces it, and the old one stays published `overlap_ms` more
(at least a token's lifetime: every token it signed can still be checked), then is dropped.

    created ──▶ signs (the newest) ──rotate──▶ retired: published, signs nothing ──overlap──▶ dropped
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from farm.models import JobSpec

if TYPE_CHECKING:
    from joserfc.jwk import RSAKey

ALG = "RS256"
KEY_BITS = 2048
PROTECTED, UNPROTECTED = "protected", "unprotected"  # farm.cache.scope.Tier's values
# What a step may ask to be the token's `aud`: a URL or a name (sts.amazonaws.com,
# api://AzureADTokenExchange, https://vault.example.com:8200), never a space or a quote.
AUDIENCE = r"^[A-Za-z0-9][A-Za-z0-9._~:/@+=,%-]{0,254}$"
CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tenant", "pool", "repository", "ref", "tier", "job_id", "run_id", "attempt")  # fmt: skip


@dataclass(frozen=True)
class Subject:
    """What a token speaks for: one attempt of one job, as farm stored it at submit."""

    tenant: str
    pool: str
    repository: str  # the job's git URL; "" for a job without a source
    ref: str  # the ref it checks out; "" without a source
    tier: str  # PROTECTED or UNPROTECTED: the submitting token's, never the job's say
    job_id: str
    run_id: str  # "" for a job submitted alone
    attempt: int

    @classmethod
    def of(cls, job_id: str, attempt: int, tenant: str, spec: JobSpec, tier: str, run_id: str | None) -> Subject:
        git = spec.source.git if spec.source else None
        return cls(tenant, spec.pool, git.url if git else "", git.ref if git else "", PROTECTED if tier == PROTECTED else UNPROTECTED,
                   job_id, run_id or "", attempt)  # fmt: skip

    @property
    def sub(self) -> str:
        """`tenant:<tenant>:tier:<tier>:repo:<git url>:ref:<ref>`. The tier comes before the
        job's own words (URL, ref), so a relying party that matches `sub` alone (an AWS role's
        StringLike) cannot be fooled by a pull request that names the default branch."""
        return f"tenant:{self.tenant}:tier:{self.tier}:repo:{self.repository}:ref:{self.ref}"


def claims(subject: Subject, *, issuer: str, audience: str, now_s: int, ttl_s: int, jti: str) -> dict[str, Any]:
    """The token's claims (`CLAIMS`, in that order)."""
    s = subject
    return {"iss": issuer, "sub": s.sub, "aud": audience, "exp": now_s + ttl_s, "iat": now_s, "nbf": now_s, "jti": jti,
            "tenant": s.tenant, "pool": s.pool, "repository": s.repository, "ref": s.ref, "tier": s.tier,
            "job_id": s.job_id, "run_id": s.run_id, "attempt": s.attempt}  # fmt: skip


# -- signing keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A signing key as kept (farm.store.keys `signingkeys`): the private JWK, when it was
    made and when a newer one retired it (ms, the store's clock)."""

    kid: str
    jwk: str  # the private JWK, JSON
    created_ms: int
    retired_ms: int | None = None

    def to_json(self) -> str:
        return json.dumps({"jwk": json.loads(self.jwk), "created": self.created_ms, "retired": self.retired_ms})

    @classmethod
    def from_json(cls, kid: str, raw: str) -> SigningKey:
        doc = json.loads(raw)
        return cls(kid, json.dumps(doc["jwk"]), int(doc["created"]), None if doc.get("retired") is None else int(doc["retired"]))

    def public(self) -> dict[str, str]:
        """The JWK relying parties get: the public half, with its use and algorithm."""
        return {**_private(self.jwk).as_dict(private=False), "kid": self.kid, "use": "sig", "alg": ALG}


def generate(now_ms: int) -> SigningKey:
    """A new key; its id is its RFC 7638 thumbprint."""
    from joserfc.jwk import RSAKey  # here, not at the top: farm.settings imports AUDIENCE, and the CLI no JOSE

    key = RSAKey.generate_key(KEY_BITS)
    return SigningKey(key.thumbprint(), json.dumps(key.as_dict(private=True)), now_ms)


@lru_cache(maxsize=16)
def _private(jwk: str) -> RSAKey:
    # Loading an RSA private key checks it (~0.1 s): once per key and process, not per token.
    from joserfc.jwk import RSAKey

    return RSAKey.import_key(json.loads(jwk))


def sign(key: SigningKey, payload: dict[str, Any]) -> str:
    from joserfc import jwt

    return jwt.encode({"alg": ALG, "typ": "JWT", "kid": key.kid}, payload, _private(key.jwk), algorithms=[ALG])


@dataclass(frozen=True)
class Rotation:
    """What the store must do now: retire `retire` (at now), drop `drop`, add a new key if
    `new_key`; `current` signs when no new key is needed."""

    current: SigningKey | None
    new_key: bool
    retire: tuple[str, ...]
    drop: tuple[str, ...]

    @property
    def changes(self) -> bool:
        return self.new_key or bool(self.retire or self.drop)


def _newest(keys: list[SigningKey]) -> SigningKey | None:
    live = [k for k in keys if k.retired_ms is None]
    return max(live, key=lambda k: (k.created_ms, k.kid)) if live else None


def plan(keys: list[SigningKey], *, now_ms: int, rotate_ms: int, overlap_ms: int, force: bool = False) -> Rotation:
    """The rotation step at `now_ms`, in named steps: the current key (the newest not retired),
    whether it is due for replacing, which keys retire (every other one not retired, and it
    too when replaced) and which go (retired `overlap_ms` ago or more)."""
    current = _newest(keys)
    due = force or current is None or now_ms - current.created_ms >= rotate_ms
    retire = tuple(sorted(k.kid for k in keys if k.retired_ms is None and (due or k is not current)))
    drop = tuple(sorted(k.kid for k in keys if k.retired_ms is not None and now_ms - k.retired_ms >= overlap_ms))
    return Rotation(None if due else current, due, retire, drop)


def apply(keys: list[SigningKey], rotation: Rotation, *, now_ms: int, new: SigningKey | None) -> list[SigningKey]:
    """The keys after `rotation` (what the store writes, for tests to hold it to)."""
    out = [replace(k, retired_ms=now_ms) if k.kid in rotation.retire else k for k in keys if k.kid not in rotation.drop]
    return out + ([new] if new is not None else [])


def published(keys: list[SigningKey], *, now_ms: int, overlap_ms: int) -> list[SigningKey]:
    """The keys in the JWKS at `now_ms`, newest first: the current one, and those retired
    less than `overlap_ms` ago (whether or not the store has dropped the others yet)."""
    shown = [k for k in keys if k.retired_ms is None or now_ms - k.retired_ms < overlap_ms]
    return sorted(shown, key=lambda k: (k.created_ms, k.kid), reverse=True)


def audience_ok(audience: str, allowed: list[str]) -> bool:
    """Whether a step may ask for `audience`: well formed, and on the list when there is one."""
    return re.fullmatch(AUDIENCE, audience) is not None and (not allowed or audience in allowed)
