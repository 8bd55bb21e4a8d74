"""What the /v1 routes that are not about one job answer, as models: the OpenAPI document
shows each body's real shape (and a response that strays from it is a 500 in the tests, not
a surprise in a client).

The JSON is exactly what the routes answered before they had models; the CLI
(`farm queue`, `farm cache ls`) and scripts read it. Records other components write
(the autoscaler's decisions, the policy audit trail) keep any field they add later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from farm.autoscale.kinds import CapacityPolicy
from farm.cache.scope import Tier
from farm.models import Timestamp


class ExecutorCounts(BaseModel):
    starting: int
    idle: int
    busy: int
    draining: int


class StartFailure(BaseModel):
    """Why the pool's latest executor could not start."""

    executor: str
    reason: str
    at_ms: int


class PoolQueuePublic(BaseModel):
    name: str
    queued: int
    running: int
    oldest_wait_s: float
    executors: ExecutorCounts
    last_start_failure: StartFailure | None = None


class QueuePublic(BaseModel):
    pools: list[PoolQueuePublic]
    restarts: dict[str, int] = Field(description="restarts so far, by component (redis, executor, warden, autoscaler, lifeline)")
    degraded: list[str] = Field(default_factory=list, description="why the farm is degraded now (empty when it is not): "
                                "the store refuses writes, so new work is refused with 503s")


class ExecutorPublic(BaseModel):
    id: str
    pool: str
    state: str
    job: str | None
    seen_at: Timestamp
    pid: int | None = None
    node: str | None = Field(default=None, description="farm's name for the node (its warden fences there)")
    ray_node: str | None = Field(default=None, description="the Ray node id the executor's actor runs on")
    address: str | None = Field(default=None, description="that node's address")


class ExecutorsPublic(BaseModel):
    executors: list[ExecutorPublic]


class PolicyPublic(BaseModel):
    """A pool's capacity policy as stored: version 0 (and no policy) until one is set."""

    version: int
    policy: CapacityPolicy | None
    updated_by: str | None
    updated_at: Timestamp | None


class PoolPublic(PoolQueuePublic):
    policy: PolicyPublic


class PoolsPublic(BaseModel):
    pools: list[PoolPublic]


class SeedSummary(BaseModel):
    """What a seed of the pool's demand history wrote (farm.sim.history)."""

    jobs: int = Field(description="jobs in the hours written")
    hours: int = Field(description="hours written (each replaces the pool's history for that hour)")
    first: Timestamp | None = Field(description="the first hour written, after moving")
    last: Timestamp | None = Field(description="the last hour written, after moving")
    weeks_moved: int = Field(description="whole weeks the hours were moved by, so they end in the week before now")
    hours_left_out: int = Field(description="hours older than autoscaler.history_weeks, not written")


class PolicyChange(BaseModel):
    """One entry of a pool's policy audit trail (newest first): a change of the policy, or a
    seed of its demand history (then `before` and `after` are the policy it left in force)."""

    model_config = ConfigDict(extra="allow")

    version: int
    by: str
    at: Timestamp
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    seed: SeedSummary | None = None


class SeedPublic(SeedSummary):
    pool: str
    seeded: int = Field(description="seeds of this pool so far; the autoscaler learns again on each")


class HistoryPublic(BaseModel):
    """What the pool's demand history holds: what a predictive policy learns from."""

    pool: str
    jobs: int
    hours: int = Field(description="hours with demand kept")
    first: Timestamp | None
    last: Timestamp | None
    keep_weeks: int = Field(description="autoscaler.history_weeks: older hours are dropped")
    seeded: int


class PolicyHistoryPublic(BaseModel):
    changes: list[PolicyChange]


class DecisionInputs(BaseModel):
    model_config = ConfigDict(extra="allow")

    queued: int = Field(description="queued jobs counted as demand")
    held: int = Field(0, description="queued jobs not counted: their concurrency group is at its limit")
    running: int
    starting: int
    idle: int
    arrivals: int
    lead_s: float = Field(description="the provisioning lead time decided with: measured, kept across restarts")


class DecisionPublic(BaseModel):
    """One autoscaler decision for the pool (newest first)."""

    model_config = ConfigDict(extra="allow")

    at: Timestamp
    policy: str | None
    version: int
    inputs: DecisionInputs | None = None  # None: the turn failed (see error)
    current: int | None = None
    desired: int | None = None
    reason: str
    started: list[str] = Field(default_factory=list)
    drained: list[str] = Field(default_factory=list)
    error: str | None = None  # the turn raised: this pool did not scale that turn (the others did)


class DecisionsPublic(BaseModel):
    decisions: list[DecisionPublic]


class CacheEntryPublic(BaseModel):
    id: str
    key: str
    repo: str
    tier: Tier
    ref: str
    bytes: int
    created_at: Timestamp
    used_at: Timestamp


class CacheBytes(BaseModel):
    unprotected: int
    protected: int


class CachesPublic(BaseModel):
    tenant: str
    entries: list[CacheEntryPublic] = Field(description="most recently used first")
    bytes: CacheBytes
    quota_bytes: int
    protected_reserve_bytes: int


class CachesDeleted(BaseModel):
    deleted: list[str] = Field(description="ids of the entries deleted")


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: the store is up but refuses writes (new work gets 503s)")
    reasons: list[str] = Field(default_factory=list, description="why it is degraded")
