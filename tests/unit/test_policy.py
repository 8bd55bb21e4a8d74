"""Capacity policies: the shared steps, each policy's sizing rule, and the peers."""

import pytest
from pydantic import ValidationError

from farm.autoscale.policy import (
    ArcPolicy,
    GitLabPeriod,
    GitLabPolicy,
    JenkinsPolicy,
    KedaPolicy,
    PredictivePolicy,
    ReactivePolicy,
    ScheduledPolicy,
    Snapshot,
    Window,
    decide,
)

MONDAY_9 = 1763974800.0  # 2025-11-24 09:00 UTC, a Monday


def snap(**kw):
    base = dict(queued=0, running=0, starting=0, idle=0)
    base.update(kw)
    return Snapshot(**base)


def test_reactive_is_queued_plus_running_plus_buffer():
    d = decide(snap(queued=3, running=2, idle=1), ReactivePolicy(buffer=2), now=0)
    assert (d.desired, d.to_start, d.to_drain) == (7, 4, 0)
    assert "buffer 2" in d.reason


def test_bounds_apply():
    assert decide(snap(queued=50), ReactivePolicy(max=10), now=0).desired == 10
    assert decide(snap(), ReactivePolicy(min=3), now=0).desired == 3


def test_scale_up_rate_limit_per_minute():
    p = ReactivePolicy(scale_up_per_min=5)
    d1 = decide(snap(queued=20), p, now=0)
    assert d1.to_start == 5
    d2 = decide(snap(queued=20, starting=5, memory=d1.memory), p, now=30)
    assert d2.to_start == 0  # the minute's five are used
    d3 = decide(snap(queued=20, starting=5, memory=d2.memory), p, now=61)
    assert d3.to_start == 5


def test_scale_down_waits_for_the_delay_and_drains_idle_only():
    p = ReactivePolicy(scale_down_delay_s=60)
    d1 = decide(snap(running=2, idle=5), p, now=0)
    assert (d1.desired, d1.to_drain) == (7, 0)  # wants 2, holds 7 for now
    d2 = decide(snap(running=2, idle=5, memory=d1.memory), p, now=59)
    assert d2.to_drain == 0
    d3 = decide(snap(running=2, idle=5, memory=d2.memory), p, now=60)
    assert (d3.desired, d3.to_drain) == (2, 5)
    # Never more than the idle ones, whatever the policy wants.
    d4 = decide(snap(running=6, idle=1), ReactivePolicy(max=0, scale_down_delay_s=0), now=0)
    assert d4.to_drain == 1


def test_a_rise_resets_the_scale_down_delay():
    p = ReactivePolicy(scale_down_delay_s=60)
    d1 = decide(snap(idle=5), p, now=0)
    d2 = decide(snap(queued=5, idle=5, memory=d1.memory), p, now=30)
    d3 = decide(snap(idle=5, memory=d2.memory), p, now=70)
    assert d3.to_drain == 0  # below again only since t=70


def test_scheduled_windows_follow_cron_in_their_timezone():
    p = ScheduledPolicy(idle=1, windows=[Window(cron="0 9 * * 1-5", duration_s=8 * 3600, timezone="Europe/Berlin", idle=10, min=4)])
    inside = MONDAY_9 + 3600  # 10:00 UTC = 11:00 Berlin, Monday
    before = MONDAY_9 - 3 * 3600  # 06:00 UTC = 07:00 Berlin
    assert decide(snap(running=2), p, now=inside).desired == 12
    assert decide(snap(running=2), p, now=before).desired == 3
    saturday = MONDAY_9 + 5 * 86400 + 3600
    assert decide(snap(), p, now=saturday).desired == 1
    assert decide(snap(), ScheduledPolicy(windows=[Window(cron="0 9 * * *", duration_s=60, min=4)]), now=MONDAY_9 - 3600 + 30).desired == 0


def test_a_scheduled_memory_of_other_windows_starts_afresh():
    """A policy version with a window more (or fewer) than the memory it inherits decides
    from its own windows instead of failing every turn."""
    one = ScheduledPolicy(windows=[Window(cron="0 9 * * *", duration_s=3600, idle=2)])
    two = ScheduledPolicy(windows=[Window(cron="0 9 * * *", duration_s=3600, idle=2), Window(cron="0 10 * * *", duration_s=3600, idle=7)])
    kept = decide(snap(), one, now=MONDAY_9 + 60).memory
    assert decide(snap(memory=kept), two, now=MONDAY_9 + 3600 + 60).desired == 7
    assert decide(snap(memory=decide(snap(), two, now=MONDAY_9).memory), one, now=MONDAY_9 + 60).desired == 2


def test_arc_is_min_runners_plus_assigned():
    d = decide(snap(queued=2, running=3, idle=4), ArcPolicy(min_runners=4, max=100), now=0)
    assert d.desired == 9 and ArcPolicy().one_shot


def test_keda_accurate_polls_and_subtracts_pending():
    p = KedaPolicy(max=10)
    d = decide(snap(queued=6, starting=2), p, now=0)
    assert d.to_start == 4  # 6 queued - 2 pending
    d2 = decide(snap(queued=9, starting=6, memory=d.memory), p, now=10)
    assert d2.to_start == 0  # between polls
    d3 = decide(snap(queued=9, running=4, starting=0, memory=d2.memory), p, now=31)
    assert d3.to_start == 6  # min(10, 9) + 4 running > 10: 10 - 4


def test_jenkins_no_delay_and_standard_strategy():
    d = decide(snap(queued=5, idle=1, starting=1), JenkinsPolicy(), now=0)
    assert d.to_start == 3  # no-delay: 5 - (1 + 1)
    std = JenkinsPolicy(no_delay=False)
    first = decide(snap(queued=5), std, now=0)
    assert first.to_start >= 1  # nothing at all and work waiting: provision now
    # With capacity online, the moving averages hold provisioning back until the queue
    # persists: the queue EMA must pass 1 - m (m = 0.1 + 0.4 * 0.5^4 = 0.125).
    memory = decide(snap(running=4), std, now=0).memory
    waited = None
    for tick in range(1, 60):
        d = decide(snap(queued=1, running=4, memory=memory), std, now=tick * 10)
        memory = d.memory
        if d.to_start:
            waited = tick * 10
            break
    assert waited is not None and 150 <= waited <= 250, waited


def test_jenkins_spare_keeps_idle_agents_ready():
    d = decide(snap(running=3), JenkinsPolicy(spare=4), now=0)
    assert d.desired == 7


def test_gitlab_idle_count_scale_factor_and_periods():
    p = GitLabPolicy(idle_count=2, scale_factor=0.5, scale_factor_limit=10, idle_time_s=300)
    assert decide(snap(running=10), p, now=MONDAY_9).desired == 15  # idle max(2, min(5, 10))
    off = GitLabPolicy(idle_count=5, periods=[GitLabPeriod(hours_of_week=[9], idle_count=0)])
    assert decide(snap(), off, now=MONDAY_9).desired == 0  # Monday 09:00 is hour-of-week 9
    assert decide(snap(), off, now=MONDAY_9 + 3600).desired == 5
    # An idle instance younger than idle_time stays even above the target.
    young = decide(snap(idle=3, idle_ages_s=(100, 50, 10)), GitLabPolicy(idle_count=0, idle_time_s=300, scale_down_delay_s=0), now=0)
    assert young.to_drain == 0
    old = decide(snap(idle=3, idle_ages_s=(900, 400, 10)), GitLabPolicy(idle_count=0, idle_time_s=300, scale_down_delay_s=0), now=0)
    assert old.to_drain == 2


def test_predictive_starts_from_nothing_and_learns():
    p = PredictivePolicy(target_p95_s=15)
    d = decide(snap(queued=1, arrivals=(0.0,)), p, now=0)
    assert d.desired >= 1 and "buffer" in d.reason
    memory = d.memory
    for i in range(1, 200):
        t = i * 600.0
        burst = tuple(t for _ in range(10))
        memory = decide(snap(queued=10, arrivals=burst, memory=memory), p, now=t).memory
        memory = decide(snap(memory=memory), p, now=t + 300).memory  # the burst ran and left
    # It has seen bursts of 10 every ten minutes: most hours keep an executor for nearly each
    # job of a burst. (The late budget is spent on whole hours, where it saves the most.)
    fc = memory.own
    seen = fc.hist.sum(axis=1) > 0
    assert seen.sum() >= 30
    assert (fc.buffers[seen] >= 9).mean() >= 0.8


def test_predictive_holds_a_freed_executor_as_long_as_a_boot_takes():
    assert PredictivePolicy(target_p95_s=15).hold_s(180) == 180
    assert PredictivePolicy(target_p95_s=15, scale_down_delay_s=300).hold_s(60) == 300
    assert PredictivePolicy(target_p95_s=60).hold_s(60) == 0  # a boot meets the target
    # The hold is what the shared scale-down step waits for.
    p, memory = PredictivePolicy(target_p95_s=15), None
    for now in (0.0, 100.0):
        d = decide(snap(idle=3, lead_s=180, memory=memory), p, now=now)
        memory = d.memory
    assert d.to_drain == 0
    assert decide(snap(idle=3, lead_s=180, memory=memory), p, now=181).to_drain == 3


def test_policies_refuse_bad_parameters():
    with pytest.raises(ValidationError):
        ReactivePolicy(buffer=-1)
    with pytest.raises(ValidationError):
        PredictivePolicy(quantile=1.5)
    with pytest.raises(ValidationError):
        ArcPolicy(colour="red")


def test_predictive_keeps_no_buffer_when_the_target_allows_a_boot():
    d = decide(snap(running=3, arrivals=(0.0, 0.0, 0.0), lead_s=60), PredictivePolicy(target_p95_s=60), now=0)
    assert d.desired == 3 and "no buffer" in d.reason


def test_one_registry_of_kinds_decides_for_every_kind_whatever_was_imported():
    """rules() has a rule for exactly the kinds the unions accept, and decide() works for
    each in a fresh interpreter that imported nothing but farm.autoscale.policy (the peers'
    rules once needed farm.sim.peers imported somewhere first)."""
    import subprocess
    import sys
    import typing

    from farm.autoscale.policy import LIVE_KINDS, CapacityPolicy, LivePolicy, rules

    def kinds(union):
        return {m.model_fields["kind"].default for m in typing.get_args(typing.get_args(union)[0])}

    assert set(rules()) == kinds(CapacityPolicy) and set(LIVE_KINDS) == kinds(LivePolicy) <= kinds(CapacityPolicy)
    code = ("import typing, sys\nfrom farm.autoscale.policy import CapacityPolicy, Snapshot, decide\n"
            "for m in typing.get_args(typing.get_args(CapacityPolicy)[0]):\n"
            "    decide(Snapshot(queued=1, running=0, starting=0, idle=0), m(), now=1.7e9)\n"
            "print('farm.sim' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
