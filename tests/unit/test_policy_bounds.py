"""A decision's reason names every bound that shaped `desired` (issue 28): the policy's min
and max, the scale-up budget, the scale-down delay, and the queued jobs a full concurrency
group holds, which are not demand. Pure: decide() on snapshots."""

from __future__ import annotations

from farm.autoscale.policy import Memory, ReactivePolicy, Snapshot, decide
from farm.autoscale.policy import _Limits as Limits


def snap(queued: int = 0, running: int = 0, idle: int = 0, **kw) -> Snapshot:
    return Snapshot(queued=queued, running=running, starting=0, idle=idle, **kw)


def test_each_bound_that_moved_desired_is_named_with_what_it_moved_it_from():
    d = decide(snap(queued=9), ReactivePolicy(max=5), now=100.0)
    assert d.desired == 5 and d.reason == "queued 9 + running 0 + buffer 0; held to max 5: 9 → 5"
    d = decide(snap(), ReactivePolicy(min=2), now=100.0)
    assert d.desired == 2 and d.reason.endswith("; raised to min 2: 0 → 2")
    d = decide(snap(queued=9), ReactivePolicy(max=5, scale_up_per_min=2), now=100.0)
    assert d.desired == 2 and d.reason.endswith(
        "; held to max 5: 9 → 5; the scale-up budget (2 a minute) allows 2 more now: 5 → 2"
    )
    memory = Memory(Limits(below_since=90.0))  # wanting fewer for 10 s of a 60 s delay
    d = decide(snap(idle=3, memory=memory), ReactivePolicy(scale_down_delay_s=60), now=100.0)
    assert (d.desired, d.to_drain) == (3, 0) and d.reason.endswith("; held for the scale-down delay (60 s): 0 → 3")


def test_a_decision_no_bound_moved_says_nothing_more_and_held_jobs_are_named():
    assert decide(snap(queued=3), ReactivePolicy(max=5), now=100.0).reason == "queued 3 + running 0 + buffer 0"
    d = decide(snap(queued=1, running=1, held=4), ReactivePolicy(), now=100.0)
    assert d.desired == 2 and d.reason.endswith("; 4 queued not counted: their concurrency group is at its limit")
