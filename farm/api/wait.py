"""/v1/jobs/{id}/wait: why a job waits and when it should start (farm.wait), for its tenant
and the admin. The look at the queue is farm.store.wait's; the reasoning is farm.wait's."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter

from farm.api.auth import Principal
from farm.api.deps import Config, JobId, Jobs, Policies, Registry, Who
from farm.api.errors import AMBIGUOUS, COMMON, NOT_FOUND
from farm.roles import Role, needs
from farm.settings import Settings
from farm.store.executors import ExecutorRegistry
from farm.store.jobs import JobStore
from farm.store.policies import PolicyStore
from farm.store.wait import read_view
from farm.wait import JobWait, explain

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=COMMON)


@router.get("/{job_id}/wait", openapi_extra=needs(Role.VIEWER), response_model=JobWait, responses={**NOT_FOUND, **AMBIGUOUS})
def get_wait(job_id: JobId, who: Who, jobs: Jobs, registry: Registry, policies: Policies, config: Config) -> JobWait:
    """For a queued job: its place in its pool and among its tenant's jobs, what holds it
    (each reason with a code and a sentence) and an estimated start with how it was reached.
    For one that started or ended: how long it waited."""
    return job_wait(job_id, who, jobs, registry, policies, config)


def job_wait(job_id: str, who: Principal, jobs: JobStore, registry: ExecutorRegistry, policies: PolicyStore,
             config: Settings) -> JobWait:  # fmt: skip
    """The answer of GET /v1/jobs/{id}/wait (the portal shows it too)."""
    job = jobs.get(job_id)
    who.check_can_see(job)
    view = read_view(jobs, registry, job.id, weights={t.name: t.weight for t in config.tenants}, pools=config.pools,
                     default_lead_s=config.autoscaler.lead_s)  # fmt: skip
    policy = policies.get(job.pool).policy
    if policy and policy.get("max") is not None:
        view = dataclasses.replace(view, max_executors=int(policy["max"]))
    return explain(view)
