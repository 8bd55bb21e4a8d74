"""The one registry of capacity policy kinds. Pure.

For each kind name: its configuration class (KINDS), its raw sizing rule (rules()), its
still part (stills(): until when its decisions would do nothing while no event comes) and, for the
kinds a pool runs live, how its own memory is written and read (OWN_DOCS). decide(), the
API (LivePolicy), `farm simulate` (CapacityPolicy, farm.sim.tune.POLICIES) all follow it;
tests/unit/test_policy.py holds it to the unions.

It sits on top of the rules (farm.autoscale.own and farm.autoscale.peers), which sit on the
forecaster and the kinds' data; farm.autoscale.policy, above it, is all that reads it. So
the capacity core has no cycle and imports nothing of `farm simulate` (pyproject.toml's
import contracts hold both).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from farm.autoscale import own, peers
from farm.autoscale.kinds import (
    ArcPolicy,
    GitLabPolicy,
    JenkinsPolicy,
    KedaPolicy,
    PredictivePolicy,
    ReactivePolicy,
    ScheduledPolicy,
    Snapshot,
    _Policy,
)

# Every kind's configuration, farm's own first (the order `farm simulate --policy all` runs them).
KINDS: dict[str, type[_Policy]] = {
    "reactive": ReactivePolicy,
    "scheduled": ScheduledPolicy,
    "predictive": PredictivePolicy,
    "jenkins": JenkinsPolicy,
    "gitlab": GitLabPolicy,
    "arc": ArcPolicy,
    "keda": KedaPolicy,
}

RawDecide = Callable[[Snapshot, Any, float, Any], tuple[int, str, Any]]

# When a pool, still or busy, will next see a decision that does something while no event
# comes (its counts stand), or a memory that the ticks between would have changed otherwise
# than the next decision will: each kind's own part (see policy.still_until).
RawStill = Callable[[Snapshot, Any, float, Any], float]


def never(snap: Snapshot, policy: Any, now: float, own: Any) -> float:
    return math.inf


_RULES: dict[str, RawDecide] = {"reactive": own.reactive, "scheduled": own.scheduled, "predictive": own.predictive,
                                "jenkins": peers.jenkins, "gitlab": peers.gitlab, "arc": peers.arc, "keda": peers.keda}  # fmt: skip
_STILLS: dict[str, RawStill] = {"reactive": never, "arc": never, "scheduled": own.scheduled_still, "predictive": own.predictive_still,
                                "jenkins": peers.jenkins_still, "gitlab": peers.gitlab_still, "keda": peers.keda_still}  # fmt: skip


def rules() -> dict[str, RawDecide]:
    """Every policy kind's raw sizing rule (its own memory in, its own memory out)."""
    return _RULES


def stills() -> dict[str, RawStill]:
    """Every policy kind's still part (see policy.still_until)."""
    return _STILLS


# each live kind's own memory: (to a document, from one); a peer's memory is never kept
OWN_DOCS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "reactive": (own.reactive_to_doc, own.reactive_from_doc),
    "scheduled": (own.scheduled_to_doc, own.scheduled_from_doc),
    "predictive": (own.predictive_to_doc, own.predictive_from_doc),
}
