"""Job identity's pure parts (farm/identity.py): what a token says, which keys sign and are
published over time, and that a token a step prints is masked however its output is cut."""

from __future__ import annotations

import json

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet
from pydantic import ValidationError

from farm import identity
from farm.identity import SigningKey, Subject
from farm.models import JobSpec
from farm.secrets import JWT, MASK, Masker
from farm.settings import Settings

SPEC = JobSpec.model_validate({"pool": "linux", "source": {"git": {"url": "https://git.example.com/app.git", "ref": "main"}},
                               "steps": [{"name": "s", "run": "true"}], "id_token": True})  # fmt: skip
MIN, HOUR = 60_000, 3_600_000


def subject(tier: str = "protected") -> Subject:
    return Subject.of("j" * 32, 2, "acme", SPEC, tier, "r" * 32)


def test_a_subject_is_what_farm_stored_and_the_tier_leads_its_sub():
    s = subject()
    assert (s.tenant, s.pool, s.repository, s.ref, s.tier, s.attempt) == ("acme", "linux", "https://git.example.com/app.git", "main",
                                                                           "protected", 2)  # fmt: skip
    assert s.sub == "tenant:acme:tier:protected:repo:https://git.example.com/app.git:ref:main"
    bare = Subject.of("j" * 32, 1, "acme", JobSpec(steps=[{"name": "s", "run": "true"}]), "", None)
    assert (bare.repository, bare.ref, bare.run_id, bare.tier) == ("", "", "", "unprotected")  # anything but protected is not
    assert Subject.of("j" * 32, 1, "acme", SPEC, "PROTECTED", None).tier == "unprotected"


def test_claims_hold_every_claim_the_discovery_document_lists():
    c = identity.claims(subject("unprotected"), issuer="https://farm.example.com", audience="sts.amazonaws.com", now_s=1000, ttl_s=300,
                        jti="x")  # fmt: skip
    assert tuple(c) == identity.CLAIMS
    assert (c["iat"], c["nbf"], c["exp"], c["aud"], c["tier"], c["job_id"], c["run_id"]) == (1000, 1000, 1300, "sts.amazonaws.com",
                                                                                             "unprotected", "j" * 32, "r" * 32)  # fmt: skip


@pytest.mark.parametrize("audience, allowed, ok", [
    ("sts.amazonaws.com", [], True), ("api://AzureADTokenExchange", [], True), ("https://vault.example.com:8200", [], True),
    ("", [], False), ("a b", [], False), ('x"y', [], False), ("-x", [], False), ("x" * 256, [], False),
    ("sts.amazonaws.com", ["vault"], False), ("vault", ["vault"], True),
])  # fmt: skip
def test_the_audiences_a_step_may_ask_for(audience, allowed, ok):
    assert identity.audience_ok(audience, allowed) is ok


def key(kid: str, created: int, retired: int | None = None) -> SigningKey:
    return SigningKey(kid, "{}", created, retired)


def test_no_key_is_a_new_one_and_a_fresh_one_signs_on():
    first = identity.plan([], now_ms=0, rotate_ms=HOUR, overlap_ms=MIN)
    assert first.new_key and first.current is None and not first.retire
    fresh = identity.plan([key("a", 0)], now_ms=HOUR - 1, rotate_ms=HOUR, overlap_ms=MIN)
    assert fresh.current == key("a", 0) and not fresh.changes


def test_a_due_key_is_retired_and_kept_published_for_the_overlap_then_dropped():
    due = identity.plan([key("a", 0)], now_ms=HOUR, rotate_ms=HOUR, overlap_ms=MIN)
    assert due.new_key and due.retire == ("a",) and not due.drop
    after = identity.apply([key("a", 0)], due, now_ms=HOUR, new=key("b", HOUR))
    assert after == [key("a", 0, HOUR), key("b", HOUR)]
    assert [k.kid for k in identity.published(after, now_ms=HOUR + MIN - 1, overlap_ms=MIN)] == ["b", "a"]
    # Gone at the overlap's end, even before the store drops it:
    assert [k.kid for k in identity.published(after, now_ms=HOUR + MIN, overlap_ms=MIN)] == ["b"]
    later = identity.plan(after, now_ms=HOUR + MIN, rotate_ms=HOUR, overlap_ms=MIN)
    assert later.drop == ("a",) and not later.new_key and later.current == key("b", HOUR)


def test_force_rotates_a_fresh_key_and_a_stray_second_live_key_is_retired():
    forced = identity.plan([key("a", 0)], now_ms=1, rotate_ms=HOUR, overlap_ms=MIN, force=True)
    assert forced.new_key and forced.retire == ("a",)
    two = identity.plan([key("a", 0), key("b", 5)], now_ms=10, rotate_ms=HOUR, overlap_ms=MIN)
    assert two.current == key("b", 5) and two.retire == ("a",) and not two.new_key


def test_over_a_week_of_rotations_every_unexpired_token_has_its_key_published():
    """A token signed at s with the key current then verifies at every t < s + ttl, when the
    overlap is at least the ttl: the invariant rotation exists for."""
    rotate, overlap, ttl = 10 * MIN, 5 * MIN, 5 * MIN
    keys: list[SigningKey] = []
    signed: list[tuple[int, str]] = []  # (when, kid)
    for n, now in enumerate(range(0, 7 * 24 * HOUR, 37_000)):
        step = identity.plan(keys, now_ms=now, rotate_ms=rotate, overlap_ms=overlap)
        new = key(f"k{n}", now) if step.new_key else None
        keys = identity.apply(keys, step, now_ms=now, new=new)
        signed.append((now, (new or step.current).kid))  # type: ignore[union-attr]
        shown = {k.kid for k in identity.published(keys, now_ms=now, overlap_ms=overlap)}
        assert {kid for at, kid in signed if now - at < ttl} <= shown, now
        assert len(keys) <= 2 and len(shown) <= 2  # retired keys do not pile up
        signed = [(at, kid) for at, kid in signed if now - at < ttl]


def test_a_signed_token_verifies_against_the_published_keys_only():
    k = identity.generate(0)
    assert json.loads(k.jwk)["kty"] == "RSA" and "d" in json.loads(k.jwk)
    assert set(k.public()) == {"kty", "kid", "use", "alg", "n", "e"}  # no private part
    assert SigningKey.from_json(k.kid, k.to_json()) == k
    token = identity.sign(k, {"iss": "https://farm.example.com", "aud": "x"})
    got = jwt.decode(token, KeySet.import_key_set({"keys": [k.public()]}), algorithms=[identity.ALG])
    assert got.header["kid"] == k.kid and got.claims["aud"] == "x"
    other = identity.generate(0)
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(token, KeySet.import_key_set({"keys": [other.public()]}), algorithms=[identity.ALG])


TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZW5hbnQ6YWNtZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1oZXJlX2FuZC1tb3Jl"


@pytest.mark.parametrize("cut", range(0, 120, 7))
def test_a_token_printed_in_pieces_never_reaches_the_log(cut):
    """A step writes `token=<jwt>\\n` in two reads cut anywhere: what the sink sends on each
    flush, and the rest at the end, holds no piece of the token's signature."""
    text = f"log line\ntoken={TOKEN} done\nnext line"
    mask = Masker(["request-token-value"], [JWT])
    sent, held = mask.split(text[:cut])
    out = sent
    sent, held = mask.split(held + text[cut:])
    out += sent + mask(held)
    assert TOKEN.split(".")[2][:8] not in out and f"token={MASK} done\n" in out
    assert out.startswith("log line\n") and out.endswith("next line")


def test_a_token_at_the_end_of_a_read_is_held_whole_and_text_without_one_flows():
    mask = Masker([], [JWT])
    assert mask.split(f"x {TOKEN}") == ("x ", TOKEN)  # no newline yet: the token may go on
    assert mask.split("plain output, eyJ-less\n") == ("plain output, eyJ-less\n", "")
    assert Masker([]).split("no shapes: as before") == ("no shapes: as before", "")


def test_the_settings_keep_a_retired_key_published_as_long_as_a_token_lives():
    with pytest.raises(ValidationError, match="overlap_s must be at least token_ttl_s"):
        Settings.load(identity={"token_ttl_s": 600, "overlap_s": 300})
    s = Settings.load(api={"host": "::1", "port": 9000})
    assert (s.id_issuer, s.id_request_url) == ("http://[::1]:9000", "http://[::1]:9000/id-token")
    s = Settings.load(identity={"issuer": "https://farm.example.com/", "request_url": "http://10.0.0.5:8080/id-token"})
    assert (s.id_issuer, s.id_request_url) == ("https://farm.example.com", "http://10.0.0.5:8080/id-token")
    with pytest.raises(ValidationError):
        Settings.load(identity={"audiences": ["has space"]})
