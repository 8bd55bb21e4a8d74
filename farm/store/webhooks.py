"""The webhook book: which result webhooks are due, leased to a deliverer, and what became
of each. A due entry is a job id, or "run:<id>" for a run's webhook; its state (pending,
delivered, failed) and attempts are kept on the job's or the run's hash."""

from __future__ import annotations

from farm.store.client import translated
from farm.store.jobs import JobStore


class WebhookBook:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs, self.keys = jobs, jobs.keys
        self.client = jobs.client

    def _hash(self, due: str) -> str:
        return self.keys.run(due[4:]) if due.startswith("run:") else self.keys.job(due)

    def claim(self, *, lease_s: float, limit: int) -> list[str]:
        """Due entries, leased to the caller for lease_s (webhook_claim.lua)."""
        return list(self.jobs._call("webhook_claim", int(lease_s * 1000), limit))

    def delivered(self, due: str) -> None:
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.webhooks, due)
            pipe.hset(self._hash(due), "webhook", "delivered")
            pipe.execute()

    def attempt_failed(self, due: str) -> int:
        """Count a failed delivery; returns the attempts so far."""
        with translated():
            return int(self.client.hincrby(self._hash(due), "webhook_attempts", 1))

    def give_up(self, due: str) -> None:
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.webhooks, due)
            pipe.hset(self._hash(due), "webhook", "failed")
            pipe.execute()

    def retry_in(self, due: str, delay_s: float) -> None:
        """Due again delay_s from now (the Redis server's clock, as every time in farm)."""
        with translated():
            self.client.zadd(self.keys.webhooks, {due: self.jobs.server_time_ms() + int(delay_s * 1000)})

    def forget(self, due: str) -> None:
        """An entry whose job or run is gone (purged)."""
        with translated():
            self.client.zrem(self.keys.webhooks, due)
