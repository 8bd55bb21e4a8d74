"""The app factory. `create_app(settings)` builds a self-contained app (tests build their
own); domain errors become HTTP responses in one place (`farm.api.errors`), and every /v1
request passes the gate (`farm.api.gate`) before a handler reads it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic_core import PydanticSerializationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from farm import __version__
from farm.api import accounts, audit, caches, health, identity, jobs, notify, pools, queue, runs, wait
from farm.api.auth import TokenBook
from farm.api.errors import errors_as_json, farm_error, http_error, store_failure, unstorable, validation_error
from farm.api.gate import Followers, Gate, roles_in_document
from farm.api.recorder import Recorder
from farm.api.resolver import BoundedResolver
from farm.api.ui import routes as portal
from farm.artifacts import DirectoryStore
from farm.cache.blobs import DirectoryBlobStore
from farm.errors import FarmError
from farm.metrics import make_registry
from farm.notifier import Notifier
from farm.reaper import Reaper
from farm.settings import Settings
from farm.store.accounts import Accounts
from farm.store.audit import AuditTrail
from farm.store.cache_index import CacheIndex
from farm.store.client import RedisError, connect, connect_async
from farm.store.executors import ExecutorRegistry
from farm.store.history import DemandHistory
from farm.store.identity import IdentityStore
from farm.store.jobs import JobStore
from farm.store.notify import NotifyBook
from farm.store.policies import PolicyStore
from farm.store.runs import RunStore
from farm.webhooks import Deliverer


def create_app(settings: Settings, *, store: JobStore | None = None) -> FastAPI:
    if store is None:
        if not settings.redis_url:
            raise ValueError("settings.redis_url is required to serve the API")
        store = JobStore(connect(settings.redis_url), aclient=connect_async(settings.redis_url))
    # An executor renews its entry every idle wait, and every heartbeat while it holds a job:
    # three of the longer of the two without a word, and it is no longer counted.
    stale_s = max(15.0, 3 * max(settings.executors.idle_wait_s, settings.lease.heartbeat_s))
    registry = ExecutorRegistry(store.client, store.keys, stale_s=stale_s)
    artifacts = DirectoryStore(settings.artifact_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.policies.seed(settings.policies)
        app.state.accounts.seed(settings)  # farm.yaml's tenants and tokens, as accounts (once each)
        bus_stop = asyncio.Event()
        bus = asyncio.get_running_loop().create_task(app.state.tokens.listen(bus_stop))  # other replicas' revocations
        loops = []
        if settings.api.run_reaper:
            loops.append(Reaper(store, registry, settings, artifacts).start())
        deliverer = Deliverer(store, settings) if settings.webhooks.enabled else None
        if deliverer is not None:
            loops.append(deliverer.start())
        notifier = Notifier(store, settings) if settings.notify.enabled else None  # notifications (farm.notifier)
        if notifier is not None:
            loops.append(notifier.start())
        yield
        for _, stop in loops:
            stop.set()
        for thread, _ in loops:
            thread.join(5)
        if deliverer is not None:
            deliverer.close()
        if notifier is not None:
            notifier.close()
        await app.state.recorder.close()
        bus_stop.set()
        bus.cancel()
        await asyncio.wait({bus}, timeout=3)
        await store.aclose()

    app = FastAPI(title="farm", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.runs = RunStore(store)
    app.state.registry = registry
    app.state.accounts = Accounts(store)
    app.state.tokens = TokenBook(settings, app.state.accounts)
    app.state.metrics = make_registry(store, registry, settings.pools, {settings.executors.pool: settings.executors.count},
                                      settings.autoscaler.wait_target_s)  # fmt: skip
    app.state.artifacts = artifacts
    app.state.tenants = {t.name: t for t in settings.tenants}
    app.state.policies = PolicyStore(store.client, store.keys)
    app.state.demand_history = DemandHistory(store.client, store.keys)
    app.state.caches = CacheIndex(store.client, DirectoryBlobStore(settings.cache_dir), store.keys)
    app.state.notify = NotifyBook(store)  # subscriptions and dead letters (farm.api.notify)
    app.state.identity = IdentityStore(store.client, store.keys)  # job identity: /.well-known, /id-token (farm.api.identity)
    app.state.audit = AuditTrail(store.client, store.keys, aclient=store.aclient, retention_s=settings.retention.audit_s,
                                 refusals_per_minute=settings.api.audit_refusals_per_minute)  # fmt: skip
    app.state.recorder = Recorder(app.state.audit)  # the gate's writer of the trail, in batches
    app.state.stopping = threading.Event()  # set when the server starts to stop: followers end
    app.state.followers = Followers(settings.api.max_followers_per_tenant, settings.api.follow_max_s)
    app.state.resolve = BoundedResolver()  # git hosts at submit (farm.permissions)
    app.add_exception_handler(FarmError, farm_error)
    app.add_exception_handler(RedisError, store_failure)  # a refusal no store method translated: 503, not 500
    app.add_exception_handler(RequestValidationError, validation_error)
    modules = (jobs, wait, runs, queue, pools, caches, accounts, audit, notify, health, identity)
    routes = [*app.router.routes, *(route for module in modules for route in module.router.routes)]
    app.add_exception_handler(HTTPException, _allowing_every_method(routes, http_error))
    app.add_exception_handler(PydanticSerializationError, unstorable)
    app.add_middleware(Gate, tokens=app.state.tokens, max_body_bytes=settings.api.max_body_bytes,
                       body_timeout_s=settings.api.body_timeout_s, max_inflight=settings.api.max_inflight_per_tenant,
                       routers=[m.router for m in modules], audit=app.state.recorder)  # fmt: skip
    for module in modules:
        app.include_router(module.router)
    app.include_router(portal.router)  # /ui: the portal (farm.api.ui), on the same tokens
    app.add_middleware(portal.SecurityHeaders)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = roles_in_document(errors_as_json(FastAPI.openapi(app)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowing_every_method(
    routes: list[BaseRoute], handler: Callable[[Request, Exception], Awaitable[Response]]
) -> Callable[..., Any]:
    """`handler`, with a 405's Allow header naming every method of the path (RFC 9110), from
    every one of `routes`. Starlette names those of the first route that matches the path,
    and FastAPI makes a route per method: OPTIONS /v1/pools/{name}/policy said `Allow: GET`."""
    routes = [route for route in routes if getattr(route, "methods", None)]

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            methods = {m for route in routes if route.matches(request.scope)[0] is not Match.NONE
                       for m in route.methods}  # type: ignore[attr-defined]  # fmt: skip
            if methods:
                allow = ", ".join(sorted(methods, key=lambda m: (_METHODS.index(m) if m in _METHODS else len(_METHODS), m)))
                exc.headers = {**(exc.headers or {}), "Allow": allow}
        return await handler(request, exc)

    return handle


def from_environment() -> FastAPI:
    """App factory for `farm api --workers N` (uvicorn imports it in each worker process):
    settings from FARM_* and the YAML file named by FARM_CONFIG, if any."""
    import os
    from pathlib import Path

    config = os.environ.get("FARM_CONFIG")
    return create_app(Settings.load(Path(config) if config else None))
