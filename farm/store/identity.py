"""Job identity in Redis: the signing keys (farm.identity decides, this module acts) and the
one-attempt request tokens a step asks for its ID token with.

Invariants:
- Rotation is one step however many API replicas race: each reads the keys under WATCH,
  plans with farm.identity.plan at the store's clock, and writes in MULTI; a replica whose
  EXEC fails (another rotated first) reads again and finds a fresh key to sign with.
- A request token is never stored: its key holds the token's sha256 (as API tokens are kept),
  with the job and attempt it was made for, and a TTL of the attempt's longest life. It is
  honoured only while that attempt is the job's current one and running, so it dies with
  the attempt however the attempt ends (a rerun or a retry gets a new one).
- Signing keys are private: they sit in Redis beside everything else inside farm's trust
  boundary, and leave it only as their public halves (the JWKS).
"""

from __future__ import annotations

import hashlib
import math
import secrets

import redis

from farm import identity
from farm.errors import StoreUnavailable, TooManyRequests
from farm.identity import SigningKey, Subject
from farm.models import JobSpec
from farm.store.client import translated
from farm.store.keys import Keys

TOKEN_CHARS = 43  # secrets.token_urlsafe(32): 256 random bits
_TRIES = 8  # WATCH retries; past them another replica is rotating nonstop: a bug


def new_request_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class IdentityStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client, self.keys = client, keys or Keys()

    # -- signing keys ----------------------------------------------------------------------------

    def signing_key(self, *, rotate_s: float, overlap_s: float, force: bool = False) -> tuple[SigningKey, list[SigningKey], int]:
        """The key that signs now, rotating first when it is due (or `force`: an operator's or
        a test's rotation), the keys published after that, and the store's clock (ms)."""
        name = self.keys.signing_keys
        with translated(), self.client.pipeline(transaction=True) as pipe:
            for _ in range(_TRIES):
                try:
                    pipe.watch(name)
                    now_ms = _ms(pipe.time())
                    keys = [SigningKey.from_json(kid, raw) for kid, raw in pipe.hgetall(name).items()]
                    step = identity.plan(keys, now_ms=now_ms, rotate_ms=int(rotate_s * 1000), overlap_ms=int(overlap_s * 1000),
                                         force=force)  # fmt: skip
                    new = identity.generate(now_ms) if step.new_key else None
                    after = identity.apply(keys, step, now_ms=now_ms, new=new)
                    if step.changes:
                        pipe.multi()
                        if step.drop:
                            pipe.hdel(name, *step.drop)
                        for key in after:
                            if key.kid in step.retire or key is new:
                                pipe.hset(name, key.kid, key.to_json())
                        pipe.execute()
                    else:
                        pipe.unwatch()
                except redis.WatchError:
                    continue
                current = new or step.current
                assert current is not None
                return current, identity.published(after, now_ms=now_ms, overlap_ms=int(overlap_s * 1000)), now_ms
        raise StoreUnavailable(f"the signing keys changed under {_TRIES} rotations in a row; retry")

    def rotate(self, *, rotate_s: float, overlap_s: float) -> SigningKey:
        """A new signing key now, whatever the current one's age (an operator's, or a test's)."""
        return self.signing_key(rotate_s=rotate_s, overlap_s=overlap_s, force=True)[0]

    # -- request tokens ---------------------------------------------------------------------------

    def grant(self, token: str, job_id: str, attempt: int, *, ttl_s: float) -> None:
        """Let `token` ask for ID tokens of this attempt for at most `ttl_s`."""
        key = self.keys.id_request(_digest(token))
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping={"job": job_id, "attempt": attempt})
            pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            pipe.execute()

    def revoke(self, token: str) -> None:
        with translated():
            self.client.delete(self.keys.id_request(_digest(token)))

    def subject(self, token: str, *, per_minute: int | None = None) -> Subject | None:
        """What `token` may ask an ID token for: its attempt, while that attempt is its job's
        current one and running and the job asked for identity; None otherwise. The token is
        found by its sha256, so no comparison of secrets runs here. `per_minute`: the most asks
        of one request token in a minute (counted in the same round trip as the job's read,
        and only for a token farm granted); past it TooManyRequests."""
        if len(token) != TOKEN_CHARS:
            return None
        digest = _digest(token)
        with translated():
            grant = self.client.hgetall(self.keys.id_request(digest))
            if not grant.get("job"):
                return None
            fields = ("tenant", "state", "attempt", "spec", "tier", "run")
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(self.keys.job(grant["job"]), fields)
            if per_minute is not None:
                rate = self.keys.id_rate(digest)
                pipe.set(rate, 0, ex=60, nx=True)  # a window of a minute from the first ask in it
                pipe.incr(rate)
                pipe.pttl(rate)
            got = pipe.execute()
        tenant, state, attempt, spec, tier, run = got[0]
        if per_minute is not None and got[2] > per_minute:
            raise TooManyRequests(f"this attempt asked for more than {per_minute} ID tokens in a minute (identity.requests_per_minute); "
                                  "retry when the minute ends", retry_after_s=max(1, math.ceil(got[3] / 1000)))  # fmt: skip
        if state != "running" or attempt is None or attempt != grant.get("attempt") or spec is None or tenant is None:
            return None
        job_spec = JobSpec.model_validate_json(spec)
        if not job_spec.id_token:
            return None
        return Subject.of(grant["job"], int(attempt), tenant, job_spec, tier or identity.UNPROTECTED, run)


def _ms(time_reply: tuple[int, int]) -> int:
    s, us = time_reply
    return int(s) * 1000 + int(us) // 1000
