"""One error tree for farm.

    FarmError                    root: anything farm raises on purpose
    ├── InvalidInput             the request is well-formed but not acceptable (unknown pool...)
    │   └── UnsafeEntry          a path, link or file type that would leave the workspace (farm.paths)
    ├── NotFound                 no such job (or not visible to the caller)
    ├── Unauthorized             no token, or a token nobody issued
    │   └── TokenRefused         a token farm knows but refuses (expired, tenant disabled): who, for the trail (farm.api.auth)
    ├── Forbidden                a valid token that may not do this
    │   └── SourceRefused        a checkout's git host is not a public address (the executor's check)
    ├── Conflict                 the job's state does not allow the operation
    │   ├── IllegalTransition    a state change the transition table refuses
    │   └── Ambiguous            an id prefix names more than one job (or run): `matches` shows some
    ├── TooManyRequests          over a per-tenant cap (open log followers...) or a rate: `retry_after_s`
    │   └── QueueFull            the tenant has as many jobs queued as it may (farm.store.jobs)
    ├── StaleAttempt             an executor wrote for an attempt that is no longer current
    ├── StoreUnavailable         Redis cannot be reached
    ├── RuntimeFailure           a runtime (local, docker) could not run a step at all
    ├── Fenced                   the attempt was fenced on its node: it may start nothing more (agents.containment)
    ├── CorruptBlob              a cache blob's bytes no longer hash to its name, or it is gone (farm.cache.blobs)
    ├── MemoryDocError           a kept document of what a policy learned that this farm cannot read (farm.autoscale.document)
    ├── UnkeepableMemory         what a policy learned cannot be written as a document: a bug (farm.autoscale.document)
    ├── HistoryError             an hour of demand history that is not well formed (farm.autoscale.demand)
    ├── TraceError               a demand trace that cannot be read (farm.sim.trace)
    ├── RayUnavailable           the Ray cluster cannot be joined (farm.embedded)
    ├── HeadTooLarge             a request head over the server's cap: uvicorn answers 400 (farm.api.server)
    ├── BodyTooLarge             a request body over api.max_body_bytes: 413 (farm.api.gate)
    ├── BodyTimeout              a request body not in within api.body_timeout_s: 408 (farm.api.gate)
    ├── SpecError                a job or policy file that cannot be read (farm.cli.output)
    ├── ApiError                 the API answered an error status (farm.client)
    └── Unreachable              the API cannot be reached (farm.client)

The classes named with a module live there, beside what raises them; the rest are below.
BodyTooLarge and BodyTimeout are starlette HTTPExceptions as well: FastAPI passes those
through while it reads a body (any other error there becomes a 400).

Adapters translate third-party errors (redis, docker) into this tree at their boundary; the
API maps the tree to HTTP in one handler (`farm.api.errors`), so services never raise
HTTPException. A unit test (tests/unit/test_error_tree.py) finds every exception class in
farm and agents and checks it is in this tree, and drawn here.
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
    """Over a cap or a rate; `retry_after_s`: when to ask again (the Retry-After header)."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StaleAttempt(FarmError):
    pass


class StoreUnavailable(FarmError):
    pass


class RuntimeFailure(FarmError):
    pass
