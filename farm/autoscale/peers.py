"""Peer autoscalers, reimplemented from their own source and docs so that farm's policies can
be compared with what teams run today (`farm simulate`; a pool runs farm's own kinds live).
Pure, like farm's own (farm.autoscale.own): their rules are in farm.autoscale.registry, and
the shared steps (farm.autoscale.policy) apply to them too.

Each keeps to the published behaviour; where a knob had to be chosen for a sweep, the
docstring says which and why.
"""

from __future__ import annotations

import math
from typing import Any

from farm.autoscale.forecast import hour_of_week
from farm.autoscale.kinds import ArcPolicy, GitLabPolicy, JenkinsPolicy, KedaPolicy, Snapshot


def jenkins(snap: Snapshot, p: JenkinsPolicy, now: float, own: Any) -> tuple[int, str, Any]:
    """Jenkins core `NodeProvisioner.StandardStrategyImpl` (jenkinsci/jenkins,
    core/src/main/java/hudson/slaves/NodeProvisioner.java) with the kubernetes plugin's
    `NoDelayProvisionerStrategy` (jenkinsci/kubernetes-plugin).

    Standard: `LoadStatistics` keeps exponential moving averages of idle executors, queue
    length and connecting executors, updated every 10 s with decay 0.9. Provisioning is
    considered only when available = max(idle now, idle EMA) < MARGIN; then
    excess = min(queue EMA, queue now) - planned - min(connecting EMA, connecting now), and
    floor(excess + m) agents are started when excess > 1 - m, where
    m = MARGIN + (MARGIN0 - MARGIN) * MARGIN_DECAY ** total executors (0.1, 0.5, 0.5).
    No-delay: start (queue length - (idle + connecting + planned)) agents at once.
    Agents: the kubernetes plugin's default retention is one build per agent (`one_shot`).
    `spare` keeps that many idle agents ready (as the EC2 plugin's
    minimumNumberOfSpareInstances does): the knob a hindsight sweep tunes, since neither
    strategy ever provisions ahead of demand by itself.
    """
    last, avail, qlen, conn = own if own else (now, float(snap.idle), float(snap.queued), float(snap.starting))
    while now - last >= 10:  # LoadStatistics.CLOCK ticks
        avail = p.decay * avail + (1 - p.decay) * snap.idle
        qlen = p.decay * qlen + (1 - p.decay) * snap.queued
        conn = p.decay * conn + (1 - p.decay) * snap.starting
        last += 10
    memory = (last, avail, qlen, conn)
    if p.no_delay:
        provision = max(0, snap.queued - (snap.idle + snap.starting))
        why = f"no-delay: queue {snap.queued} - available {snap.idle + snap.starting}"
    else:
        provision, why = 0, "standard: enough available"
        if max(snap.idle, avail) < p.margin or (snap.current == 0 and snap.queued > 0):
            excess = min(qlen, snap.queued) - min(conn, snap.starting)
            if snap.current == 0 and snap.queued > 0 and excess < 1:
                excess = 1
            m = p.margin + (p.margin0 - p.margin) * p.margin_decay ** snap.current
            if excess > 1 - m:
                provision = math.floor(excess + m)
                why = f"standard: excess workload {excess:.2f} > 1 - {m:.2f}"
    spare_gap = max(0, p.spare - max(0, snap.idle + snap.starting + provision - snap.queued))
    if p.one_shot:
        keep = snap.idle
    else:
        keep = sum(1 for age in snap.idle_ages_s if age < p.idle_minutes * 60)
        keep = max(keep, min(snap.idle, p.spare + snap.queued))
    desired = snap.running + snap.starting + keep + provision + spare_gap
    return desired, f"{why}; spare {p.spare}", memory


def _ages_cross(snap: Snapshot, now: float, limit: float) -> float:
    """When the next idle executor younger than `limit` reaches it."""
    return min((now + limit - age for age in snap.idle_ages_s if age < limit), default=math.inf)


def jenkins_still(snap: Snapshot, p: JenkinsPolicy, now: float, own: Any) -> float:
    """Between events the counts stand, so the load statistics' moving averages catch up
    over the clock ticks missed with the same counts, and no-delay provisions what it did
    now (nothing). The standard strategy with jobs queued is the exception: its averages
    drift toward the queue and may provision at any clock tick (`now`: no skipping). Else
    only an idle agent outliving its retention changes anything."""
    if snap.queued and not p.no_delay:
        return now
    return math.inf if p.one_shot else _ages_cross(snap, now, p.idle_minutes * 60)


def _period(p: GitLabPolicy, now: float) -> tuple[int, float]:
    h = hour_of_week(now)
    idle, idle_time = p.idle_count, p.idle_time_s
    for period in p.periods:  # the last matching period wins, as in taskscaler
        if h in period.hours_of_week:
            idle = period.idle_count
            idle_time = period.idle_time_s if period.idle_time_s is not None else idle_time
    return idle, idle_time


def gitlab(snap: Snapshot, p: GitLabPolicy, now: float, own: Any) -> tuple[int, str, Any]:
    """GitLab Runner's taskscaler (gitlab.com/gitlab-org/fleeting/taskscaler), as configured
    by `[runners.autoscaler]` and its `[[runners.autoscaler.policy]]` periods (docs: "Docker
    Autoscaler executor", "Instance executor").

    Idle capacity to keep = max(idle_count, min(scale_factor * in-use, scale_factor_limit));
    instances for waiting jobs are asked for at once; an idle instance is removed only once
    it has been idle longer than idle_time and the pool is above its idle target. A policy
    period (cron `periods` with a timezone) overrides idle_count and idle_time while it is
    in force; here periods are compiled to hours of the week, which is what the hindsight
    calendar tunes (idle_count, or nothing, per hour).
    """
    idle_count, idle_time = _period(p, now)
    target = max(idle_count, min(math.floor(p.scale_factor * snap.running), p.scale_factor_limit))
    young = sum(1 for age in snap.idle_ages_s if age < idle_time)
    keep = max(young, min(snap.idle, target + snap.queued))
    waiting = max(0, snap.queued - snap.idle - snap.starting)
    spare_gap = max(0, target - max(0, snap.idle + snap.starting - snap.queued))
    desired = snap.running + snap.starting + keep + waiting + spare_gap
    return desired, f"idle target {target} (idle_count {idle_count}), {waiting} waiting", own


def gitlab_still(snap: Snapshot, p: GitLabPolicy, now: float, own: Any) -> float:
    """An idle instance outliving its idle_time, or a new hour (a period may start)."""
    _, idle_time = _period(p, now)
    hour = (math.floor(now / 3600) + 1) * 3600.0 if p.periods else math.inf
    return min(hour, _ages_cross(snap, now, idle_time))


def arc(snap: Snapshot, p: ArcPolicy, now: float, own: Any) -> tuple[int, str, Any]:
    """actions-runner-controller runner scale sets (actions/actions-runner-controller,
    gha-runner-scale-set listener): desired runners = min(maxRunners, minRunners + jobs
    assigned to the scale set), recomputed on every job event; runners are ephemeral (one
    job each, `one_shot`). minRunners is the idle buffer a hindsight sweep tunes.
    """
    assigned = snap.queued + snap.running
    return min(p.max, p.min_runners + assigned), f"minRunners {p.min_runners} + assigned {assigned}", own


def keda(snap: Snapshot, p: KedaPolicy, now: float, own: Any) -> tuple[int, str, Any]:
    """KEDA ScaledJob with scalingStrategy `accurate` (kedacore/keda,
    pkg/scaling/executor/scale_jobs.go): every pollingInterval (30 s, on a timer: once in each
    interval of the clock, whatever arrives between),
    maxScale = min(maxReplicaCount, ceil(queueLength / targetValue)); if maxScale + running
    > maxReplicaCount it creates maxReplicaCount - running jobs, else maxScale - pending
    jobs. Each job takes one message and exits (`one_shot`); minReplicaCount keeps that
    many jobs waiting, the buffer a hindsight sweep tunes.
    """
    if own is not None and math.floor(now / p.polling_interval_s) == math.floor(own / p.polling_interval_s):
        return snap.current, "between polls", own
    new = _keda_new(snap, p)
    return snap.current + new, f"accurate: queue {snap.queued}, pending {snap.starting}, min {p.min_replicas}", now


def _keda_new(snap: Snapshot, p: KedaPolicy) -> int:
    """The jobs a poll creates."""
    max_scale = min(p.max, math.ceil(snap.queued / p.target_queue_length))
    if max_scale + snap.running > p.max:
        new = p.max - snap.running
    else:
        new = max_scale - snap.starting
    return max(new, p.min_replicas - snap.idle - snap.starting, 0)


def keda_still(snap: Snapshot, p: KedaPolicy, now: float, own: Any) -> float:
    """Between events the counts stand: a poll finds nothing to do if one on them now
    would, or if the pool is at its max (whatever it wants is bounded to that); else the
    next interval's poll creates some."""
    if _keda_new(snap, p) == 0 or snap.current >= p.max:
        return math.inf
    return (math.floor(now / p.polling_interval_s) + 1) * p.polling_interval_s
