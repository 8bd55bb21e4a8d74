"""The reasoning of /v1/jobs/{id}/wait on hand-made looks at a pool (farm.wait is pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from farm.models import JobState
from farm.wait import Busy, QueueView, Tenant, estimate_start, explain, play_claims


def view(**kw):
    base = {"job": "j", "state": JobState.QUEUED, "pool": "p", "tenant": "a", "now": datetime(2026, 1, 1, tzinfo=UTC),
            "waited_s": 5.0, "rank_in_tenant": 0, "tenants": [Tenant("a", 0.0, 1.0, 1)]}
    return QueueView(**{**base, **kw})


def test_claims_follow_stride_passes_and_weights():
    # b weighs 2: it claims twice for each of a's turns; ties go to the lower name.
    tenants = [Tenant("a", 0.0, 1.0, 5), Tenant("b", 0.0, 2.0, 5)]
    # order: a(0) b(0) b(.5) a(1) b(1) b(1.5) a(2) ...
    assert play_claims(tenants, "a", 0) == (0, False)
    assert play_claims(tenants, "a", 1) == (3, False)
    assert play_claims(tenants, "b", 1) == (2, False)
    assert play_claims(tenants, "a", 2) == (6, False)


def test_a_tenant_that_runs_out_stops_taking_turns():
    tenants = [Tenant("a", 0.0, 1.0, 1), Tenant("b", 0.0, 1.0, 4)]
    assert play_claims(tenants, "b", 3) == (4, False)


def test_counting_stops_at_the_limit():
    assert play_claims([Tenant("a", 0.0, 1.0, 50), Tenant("b", 20.0, 1.0, 1)], "b", 0, limit=10) == (10, True)
    assert play_claims([Tenant("a", 0.0, 1.0, 50), Tenant("b", 5.0, 1.0, 1)], "b", 0) == (6, False)  # a wins the tie at 5


def test_the_estimate_plays_executors_forward():
    v = view(busy=[Busy("x", 20.0), Busy("y", 50.0)], recent_durations_s=(30.0, 60.0, 90.0))  # mean 60 s
    # x has run 20 s: jobs that ran longer ran 30, 60 or 90 s, 40 s more on average: x frees at 40 s;
    # y (50 s) at 25 s. One job ahead takes y's executor until 85 s: this one starts at 40 s.
    start, method = estimate_start(v, 1)
    assert start == 40.0 and "1 job(s) ahead" in method and "the mean 60 s of the pool's last 3 attempts" in method
    assert estimate_start(v, 0)[0] == 25.0
    assert estimate_start(view(busy=[Busy("x", 100.0)], recent_durations_s=(30.0,)), 0)[0] == 0.0  # past them all


def test_a_starting_executor_counts_from_the_measured_lead():
    v = view(starting=1, starting_for_s=12.0, lead_s=30.0)
    assert estimate_start(v, 0) == (18.0, "0 job(s) ahead on the pool's executors (1 starting, up after the measured lead of 30 s)")


def test_no_estimate_without_anything_to_go_on():
    assert estimate_start(view(busy=[Busy("x", 1.0)]), 0) is None  # busy, no durations to go on
    assert explain(view()).estimate is None and [r.code for r in explain(view()).reasons] == ["no_executors"]


def test_a_full_group_is_named_before_the_queue_and_has_no_estimate():
    got = explain(view(idle=1, group="deploy", group_limit=1, group_running=1, group_holders=["h"], recent_durations_s=(5.0,)))
    assert [r.code for r in got.reasons] == ["concurrency_group"] and got.reasons[0].jobs == ["h"] and got.estimate is None
    assert got.summary.startswith("queued 5 s: its concurrency group 'deploy' is at its limit of 1, held by h")


def test_a_started_job_says_how_long_it_waited_and_why():
    got = explain(view(state=JobState.RUNNING, rank_in_tenant=None, waited_s=42.0, started=True, taken_by="starting"))
    assert not got.waiting and got.summary == "running: it waited 42 s in the queue: no executor was free: one started for it"
    quick = explain(view(state=JobState.SUCCEEDED, rank_in_tenant=None, waited_s=0.01, started=True, taken_by="idle"))
    assert quick.reasons == [] and quick.summary == "succeeded: it waited 0 s in the queue"
