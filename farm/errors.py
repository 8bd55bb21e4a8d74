"""One error tree for farm.

    FarmError                    root: anything farm raises on purpose
    ├── InvalidInput             the request is well-formed but not acceptable (unknown pool...)
    ├── NotFound                 no such job (or not visible to the caller)
    ├── Unauthorized             no token, or a token nobody issued
    ├── Forbidden                a valid token that may not do this
    │   └── SourceRefused        a checkout's git host is not a public address (the executor's check)
    ├── Conflict                 the job's state does not allow the operation
    │   ├── IllegalTransition    a state change the transition table refuses
    │   └── Ambiguous            an id prefix names more than one job (or run): `matches` shows some
    ├── TooManyRequests          a tenant is over a per-tenant cap (open log followers...)
    ├── StaleAttempt             an executor wrote for an attempt that is no longer current
    ├── StoreUnavailable         Redis cannot be reached
    └── RuntimeFailure           a runtime (local, docker) could not run a step at all

Adapters translate third-party errors (redis, docker) into this tree at their boundary; the
API maps the tree to HTTP in one handler (`farm.api.app`), so services never raise
HTTPException.
"""

from __future__ import annotations


class FarmError(Exception):
    """Root of every error farm raises on purpose."""


class InvalidInput(FarmError):
    pass


class NotFound(FarmError):
    pass


class Unauthorized(FarmError):
    pass


class Forbidden(FarmError):
    pass


class SourceRefused(Forbidden):
    pass


class Conflict(FarmError):
    pass


class IllegalTransition(Conflict):
    pass


class Ambiguous(Conflict):
    """An id prefix that names more than one job or run; `matches` holds (id, state) of
    some of them (farm.store.ids bounds how many)."""

    def __init__(self, message: str, matches: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.matches = matches


class TooManyRequests(FarmError):
    pass


class StaleAttempt(FarmError):
    pass


class StoreUnavailable(FarmError):
    pass


class RuntimeFailure(FarmError):
    pass
