"""Job identity over HTTP: the OIDC discovery document, the JWKS, and the token endpoint a
step calls with its attempt's request token (farm/identity.py says what a token is).

None of these is under /v1, so the gate (farm.api.gate) lets them through unread:
- the discovery document and the JWKS are public, as relying parties expect (no token);
- `GET /id-token` authenticates the caller itself, with the request token farm gave the
  attempt (`Authorization: Bearer $FARM_ID_TOKEN_REQUEST_TOKEN`): it is no API token, and
  the gate would refuse it as one. It answers only while that attempt runs; what the token
  says comes from what farm stored at submit, never from the request, which names the
  audience only.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from farm import identity
from farm.api.deps import Config
from farm.api.errors import COMMON, NOT_FOUND, UNAVAILABLE
from farm.errors import InvalidInput, NotFound, Unauthorized
from farm.models import Timestamp, rfc3339
from farm.settings import Settings
from farm.store.identity import IdentityStore

router = APIRouter(tags=["identity"])

_OFF = {404: {**NOT_FOUND[404], "description": "Job identity is off here (identity.enabled)"}}
_PUBLIC = {**_OFF, **UNAVAILABLE}
_REFUSED = "No request token, or one of an attempt that is not running (or that did not ask for identity)"
_TOKEN_ERRORS = {401: {**COMMON[401], "description": _REFUSED}, 422: COMMON[422],
                 429: {**COMMON[429], "description": "The attempt asked for more than identity.requests_per_minute ID tokens in a minute"},
                 **_PUBLIC}  # fmt: skip
_AUDIENCE = Query(
    min_length=1, max_length=255, pattern=identity.AUDIENCE, description="the token's `aud`: the relying party it is for"
)
_REQUEST_TOKEN = HTTPBearer(auto_error=False, scheme_name="RequestToken",
                            description="an attempt's request token: its step's FARM_ID_TOKEN_REQUEST_TOKEN")  # fmt: skip


class OpenIdConfiguration(BaseModel):
    """OpenID Connect Discovery 1.0's provider metadata, the part an ID token's relying party reads."""

    issuer: str
    jwks_uri: str
    id_token_signing_alg_values_supported: list[str]
    response_types_supported: list[str]
    subject_types_supported: list[str]
    scopes_supported: list[str]
    claims_supported: list[str]


class Jwk(BaseModel):
    kty: str
    kid: str
    use: str
    alg: str
    n: str
    e: str


class Jwks(BaseModel):
    keys: list[Jwk] = Field(description="the signing key and the retired ones still within identity.overlap_s, newest first")


class IdToken(BaseModel):
    value: str = Field(description="the ID token: a JWT signed with a key of the JWKS")
    expires_at: Timestamp


async def _identity(request: Request) -> IdentityStore:
    return request.app.state.identity


Identity = Annotated[IdentityStore, Depends(_identity)]


def _on(config: Settings) -> None:
    if not config.identity.enabled:
        raise NotFound("job identity is off here (identity.enabled)")


def _keys(config: Settings, store: IdentityStore) -> tuple[identity.SigningKey, list[identity.SigningKey], int]:
    """The signing key, the published ones and the store's clock, rotating first when due."""
    return store.signing_key(rotate_s=config.identity.rotate_s, overlap_s=config.identity.overlap_s)


@router.get("/.well-known/openid-configuration", response_model=OpenIdConfiguration, responses=_OFF)
def openid_configuration(config: Config) -> dict[str, Any]:
    _on(config)
    issuer = config.id_issuer
    return {"issuer": issuer, "jwks_uri": f"{issuer}/.well-known/jwks.json", "id_token_signing_alg_values_supported": [identity.ALG],
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"], "scopes_supported": ["openid"],
            "claims_supported": list(identity.CLAIMS)}  # fmt: skip


@router.get("/.well-known/jwks.json", response_model=Jwks, responses=_PUBLIC)
def jwks(config: Config, store: Identity, response: Response) -> dict[str, Any]:
    """The public keys; a relying party that meets an unknown `kid` fetches them again."""
    _on(config)
    _, published, _ = _keys(config, store)
    response.headers["Cache-Control"] = "public, max-age=60"
    return {"keys": [key.public() for key in published]}


@router.get("/id-token", response_model=IdToken, responses=_TOKEN_ERRORS)
def id_token(
    config: Config,
    store: Identity,
    response: Response,
    audience: Annotated[str, _AUDIENCE],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_REQUEST_TOKEN)],
) -> dict[str, Any]:
    """An ID token of the calling attempt, for `audience`."""
    _on(config)
    if credentials is None:
        raise Unauthorized("expected 'Authorization: Bearer <the step's FARM_ID_TOKEN_REQUEST_TOKEN>'")
    subject = store.subject(credentials.credentials, per_minute=config.identity.requests_per_minute)
    if subject is None:
        raise Unauthorized("unknown request token, or its attempt is not running")
    if not identity.audience_ok(audience, config.identity.audiences):
        why = f"audience {audience!r} is not one this farm issues tokens for (identity.audiences)"
        raise InvalidInput(why, ("query", "audience"))
    key, _, now_ms = _keys(config, store)
    ttl_s = config.identity.token_ttl_s
    claims = identity.claims(subject, issuer=config.id_issuer, audience=audience, now_s=now_ms // 1000, ttl_s=ttl_s,
                             jti=uuid.uuid4().hex)  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return {"value": identity.sign(key, claims), "expires_at": rfc3339(claims["exp"] * 1000)}
