"""The `noop` runtime: every step exits 0 at once without running anything.

For measuring farm's own scheduling cost (claim, lease, log, finish) apart from process
or container start-up, as `bench/dispatch.py --peers` does against Celery and RQ; and for
trying a farm's plumbing without running anyone's code.
"""

from __future__ import annotations

from agents.runtimes.base import StepContext
from farm.models import Step


class NoopRuntime:
    name = "noop"
    uses_workspace = False
    sees_new_mounts = True
    step_owner = None

    def prepare(self) -> None:
        pass

    def run_step(self, step: Step, ctx: StepContext) -> int:
        return 0

    def end_job(self, job_id: str) -> None:
        pass

    def close(self) -> None:
        pass
