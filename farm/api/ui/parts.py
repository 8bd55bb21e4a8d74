"""The app's parts a portal route reaches, read from `request.app.state` in one place (as
farm.api.deps does for the API's routes), so the portal calls the API's handlers with the
very objects the API's routes get."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from farm.addresses import Resolver
from farm.api.auth import TokenBook
from farm.api.gate import Followers
from farm.artifacts import DirectoryStore
from farm.settings import Settings, TenantConfig
from farm.store.audit import AuditTrail
from farm.store.executors import ExecutorRegistry
from farm.store.jobs import JobStore
from farm.store.policies import PolicyStore
from farm.store.runs import RunStore
from farm.store.sessions import SessionStore


@dataclass(frozen=True)
class Parts:
    config: Settings
    jobs: JobStore
    runs: RunStore
    registry: ExecutorRegistry
    policies: PolicyStore
    artifacts: DirectoryStore
    tenants: dict[str, TenantConfig]
    resolve: Resolver
    followers: Followers
    stopping: threading.Event
    tokens: TokenBook
    sessions: SessionStore
    audit: AuditTrail


def parts(request: Request) -> Parts:
    state: Any = request.app.state
    sessions = getattr(state, "ui_sessions", None)
    if sessions is None:  # made once per app, on first use: create_app need not know the portal's stores
        sessions = state.ui_sessions = SessionStore(state.store.client, state.store.keys)
    return Parts(state.settings, state.store, state.runs, state.registry, state.policies, state.artifacts, state.tenants,
                 state.resolve, state.followers, state.stopping, state.tokens, sessions, state.audit)  # fmt: skip
