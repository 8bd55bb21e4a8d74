"""Capacity policy kinds as data: what a policy is given and what it returns. Pure.

    Snapshot  what a pool looks like at one moment (the policy's own memory included)
    Decision  what the policy wants: desired executors, how many to start and to drain
    *Policy   each kind's configuration (pydantic; every field described, shown in README.md)

farm's own kinds (reactive, scheduled, predictive) are what a pool runs live (LivePolicy);
the peers (jenkins, gitlab, arc, keda) are models of other systems for `farm simulate`
(CapacityPolicy). Nothing here decides: the rules are in farm.autoscale.own and
farm.autoscale.peers, found by kind in farm.autoscale.registry, and farm.autoscale.policy
applies them. The bottom of the capacity core: this module imports nothing of farm's, so
settings, the API and the store can read a policy without the forecaster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

# -- data in and out -------------------------------------------------------------------------


# The provisioning lead time (asking for an executor -> it taking a job) assumed until one is
# measured: the live autoscaler's start (settings.autoscaler.lead_s), a snapshot's default and
# `farm simulate --lead`. A minute is a cloud VM or a pod on a new node; a farm on warm Ray
# nodes measures seconds within its first starts.
DEFAULT_LEAD_S = 60.0


@dataclass(frozen=True)
class Snapshot:
    """What a pool looks like at one moment (times in seconds)."""

    queued: int  # jobs that could start if the pool had room (those a full concurrency group holds are `held`)
    running: int  # busy executors
    starting: int  # requested, not ready yet
    idle: int
    idle_ages_s: tuple[float, ...] = ()  # how long each idle executor has been idle, longest first
    arrivals: tuple[float, ...] = ()  # submission times since the previous decision
    waits: tuple[float, ...] = ()  # how long each job started since the previous decision waited
    lead_s: float = DEFAULT_LEAD_S  # measured provisioning lead time
    memory: Any = None  # what the policy learned so far (opaque to the caller)
    held: int = 0  # queued jobs no executor could start: their concurrency group is at its limit (not demand)

    @property
    def current(self) -> int:
        return self.running + self.starting + self.idle


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    memory: Any = None
    to_start: int = 0
    to_drain: int = 0  # idle executors to stop (the longest idle first)


# -- policy configurations -------------------------------------------------------------------


# A policy's `max` when it names none. farm's own kinds (what a pool runs live) stop at
# LIVE_MAX: a policy follows the queue, so without a cap a flood of jobs (a retry storm, one
# tenant's backlog of api.max_queued_per_tenant) would start as many executors as the
# cluster holds; 50 bounds what such a mistake costs and is as many as a mid-size farm's pool
# runs at once (README, "Capacity policies"). The peers model other systems, whose own
# defaults set no cap (ARC's maxRunners, GitLab's limit 0, Jenkins' instance cap): NO_CAP.
LIVE_MAX = 50
NO_CAP = 10_000


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # JSON Schema cannot compare two fields: the rule is in both fields' descriptions, and a
    # policy that breaks it is a 422 (ValidationErrorBody) like any other invalid field.
    # Every field's description is its line in README.md's tables (tests/unit/policy_tables.py).
    min: Annotated[int, Field(ge=0, description="executors kept at least; must not exceed `max` (a 422 if it does)")] = 0
    max: Annotated[int, Field(ge=0, description="executors at most; must not be below `min` (a 422 if it is)")] = NO_CAP
    scale_up_per_min: Annotated[int | None, Field(ge=1, description="executors started in any minute at most (none: no limit)")] = None
    scale_down_delay_s: Annotated[float, Field(ge=0, description="seconds the pool must want fewer executors before idle ones "
                                               "are drained")] = 60.0
    one_shot: Annotated[bool, Field(description="`farm simulate` only: executors take one job and exit (ARC, KEDA)")] = False
    tick_s: Annotated[float, Field(gt=0, description="`farm simulate` only: seconds between decisions besides arrivals "
                                   "(live: `autoscaler.interval_s`)")] = 10.0
    on_arrival: Annotated[bool, Field(description="`farm simulate` only: decide on every arrival too")] = True
    uses_idle_ages: ClassVar[bool] = False  # its rule reads Snapshot.idle_ages_s

    @model_validator(mode="after")
    def _min_within_max(self) -> "_Policy":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is over max ({self.max})")
        return self

    def hold_s(self, lead_s: float) -> float:
        """How long desired must stay below current before idle executors are drained."""
        return self.scale_down_delay_s


class _LivePolicy(_Policy):
    """farm's own kinds, which a pool may run live: capped at LIVE_MAX unless told otherwise."""

    max: Annotated[int, Field(ge=0, description="executors at most; must not be below `min` (a 422 if it is)")] = LIVE_MAX


class ReactivePolicy(_LivePolicy):
    """queued + running + buffer."""

    kind: Literal["reactive"] = "reactive"
    buffer: Annotated[int, Field(ge=0, description="idle executors kept beyond queued + running")] = 0


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: Annotated[str, Field(description="when the window opens: cron, e.g. `0 8 * * 1-5`")]
    duration_s: Annotated[float, Field(gt=0, description="seconds it stays open")]
    timezone: Annotated[str, Field(description="the cron's time zone (an IANA name)")] = "UTC"
    idle: Annotated[int, Field(ge=0, description="idle executors kept while it is open")] = 0
    min: Annotated[int, Field(ge=0, description="executors kept at least while it is open")] = 0


class ScheduledPolicy(_LivePolicy):
    """queued + running + the idle target of the open window (or `idle` outside any)."""

    kind: Literal["scheduled"] = "scheduled"
    idle: Annotated[int, Field(ge=0, description="idle executors kept beyond queued + running while no window is open")] = 0
    windows: list[Window] = Field(default_factory=list, description="when to keep more: the largest `idle` and `min` of the "
                                  "open ones win")


class PredictivePolicy(_LivePolicy):
    """Sizes the idle buffer from the pool's own learned arrival pattern so that the share of
    jobs waiting longer than `target_p95_s` stays within `1 - quantile` (see forecast.py)."""

    kind: Literal["predictive"] = "predictive"
    target_p95_s: Annotated[float, Field(gt=0, description="the queue wait, in seconds, that at most 1 - `quantile` of jobs "
                                         "may exceed")] = 15.0
    quantile: Annotated[float, Field(gt=0.5, lt=1, description="the share of jobs that must start within `target_p95_s`")] = 0.95
    # Plan for this share of the late-job budget; the rest is kept for what no history shows
    # (a rebase starting 179 jobs in an hour, most of which wait a boot under any buffer).
    safety: Annotated[float, Field(gt=0, le=1, description="the share of the late-job budget it plans to spend; the rest is "
                                   "kept for bursts no history shows")] = 0.6
    replan_s: Annotated[float, Field(gt=0, description="seconds between plans of the coming week from what it learned")] = 3600.0
    active_s: Annotated[float, Field(gt=0, description="a job arrived within this many seconds: the pool counts as active "
                                     "(its hours are learned apart from quiet ones)")] = 900.0

    def hold_s(self, lead_s: float) -> float:
        """Keep a freed executor at least as long as a new one takes to boot (the break-even
        of ski rental: holding it longer costs more than booting anew, shorter risks paying
        for both). When a boot meets the wait target, hold none: no job needs it ready."""
        return 0.0 if self.target_p95_s >= lead_s else max(self.scale_down_delay_s, lead_s)


class JenkinsPolicy(_Policy):
    kind: Literal["jenkins"] = "jenkins"
    uses_idle_ages: ClassVar[bool] = True
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.1
    margin0: Annotated[float, Field(ge=0, lt=1)] = 0.5
    margin_decay: Annotated[float, Field(gt=0, lt=1)] = 0.5
    decay: Annotated[float, Field(gt=0, lt=1)] = 0.9
    no_delay: bool = True  # kubernetes-plugin NoDelayProvisionerStrategy
    idle_minutes: Annotated[float, Field(ge=0)] = 0.0  # retention: 0 = one build per agent
    spare: Annotated[int, Field(ge=0)] = 0  # idle agents kept ready (the sweep knob)


class GitLabPeriod(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hours_of_week: list[int]  # 0 = Monday 00:00 UTC; the compiled form of cron `periods`
    idle_count: Annotated[int, Field(ge=0)] = 0
    idle_time_s: Annotated[float | None, Field(ge=0)] = None


class GitLabPolicy(_Policy):
    kind: Literal["gitlab"] = "gitlab"
    uses_idle_ages: ClassVar[bool] = True
    idle_count: Annotated[int, Field(ge=0)] = 0
    idle_time_s: Annotated[float, Field(ge=0)] = 300.0
    scale_factor: Annotated[float, Field(ge=0)] = 0.0
    scale_factor_limit: Annotated[int, Field(ge=0)] = 0
    periods: list[GitLabPeriod] = Field(default_factory=list)


class ArcPolicy(_Policy):
    kind: Literal["arc"] = "arc"
    min_runners: Annotated[int, Field(ge=0)] = 0
    one_shot: bool = True
    scale_down_delay_s: float = 0.0


class KedaPolicy(_Policy):
    kind: Literal["keda"] = "keda"
    min_replicas: Annotated[int, Field(ge=0)] = 0
    polling_interval_s: Annotated[float, Field(gt=0)] = 30.0
    target_queue_length: Annotated[int, Field(ge=1)] = 1
    one_shot: bool = True
    on_arrival: bool = False
    scale_down_delay_s: float = 0.0


CapacityPolicy = Annotated[
    Union[ReactivePolicy, ScheduledPolicy, PredictivePolicy, JenkinsPolicy, GitLabPolicy, ArcPolicy, KedaPolicy],
    Field(discriminator="kind"),
]
# What a pool may run live (the API, farm.yaml, the autoscaler): farm's own kinds. The peers
# (jenkins, gitlab, arc, keda) are models of other systems for `farm simulate` to compare
# against; ARC's and KEDA's one-shot executors are not something farm's executors do.
LivePolicy = Annotated[Union[ReactivePolicy, ScheduledPolicy, PredictivePolicy], Field(discriminator="kind")]
LIVE_KINDS = ("reactive", "scheduled", "predictive")
