"""The Redis key schema: every key farm writes, in one place.

All keys share one prefix (`farm:` by default) so a farm can share a Redis with other users
and an ACL user can be limited to `~farm:*`. Lua scripts never spell a key: they receive
these templates in their config argument (`Keys.templates()`), so this module stays the
only place a key is named.

    {p}job:{id}             hash    one job: state, attempt, spec (JSON), times in ms, result
    {p}log:{id}             stream  log chunks (field d), system notes, and an end marker (field e)
    {p}queue:{pool}         zset    queued job ids by dispatch order (priority, then FIFO)
    {p}waiting:{pool}       zset    queued job ids by the ms they (re)entered the queue
    {p}wake:{pool}          list    wake-up tokens that idle executors block on (BLPOP)
    {p}running:{pool}       set     running job ids
    {p}leases               zset    running job ids by lease expiry (ms)
    {p}deadlines            zset    running job ids by server-side timeout (ms)
    {p}finished             zset    terminal job ids by finish time (ms), for retention
    {p}jobs                 zset    every job id by submission sequence (listing)
    {p}tenant_jobs:{tenant} zset    a tenant's job ids by submission sequence
    {p}seq                  string  submission sequence counter
    {p}stats:{pool}         hash    counters and histogram buckets read by /metrics
    {p}executors:{pool}     zset    executor ids by last-seen time (ms)
    {p}executor:{id}        hash    one executor: pool, state, job, pid
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "farm:"

_PER_ID = ("job", "log", "queue", "waiting", "wake", "running", "tenant_jobs", "stats", "executors", "executor")
_SINGLE = ("leases", "deadlines", "finished", "jobs", "seq")


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def _k(self, name: str, suffix: str | None = None) -> str:
        return f"{self.prefix}{name}" if suffix is None else f"{self.prefix}{name}:{suffix}"

    def job(self, job_id: str) -> str:
        return self._k("job", job_id)

    def log(self, job_id: str) -> str:
        return self._k("log", job_id)

    def queue(self, pool: str) -> str:
        return self._k("queue", pool)

    def waiting(self, pool: str) -> str:
        return self._k("waiting", pool)

    def wake(self, pool: str) -> str:
        return self._k("wake", pool)

    def running(self, pool: str) -> str:
        return self._k("running", pool)

    def tenant_jobs(self, tenant: str) -> str:
        return self._k("tenant_jobs", tenant)

    def stats(self, pool: str) -> str:
        return self._k("stats", pool)

    def executors(self, pool: str) -> str:
        return self._k("executors", pool)

    def executor(self, executor_id: str) -> str:
        return self._k("executor", executor_id)

    @property
    def leases(self) -> str:
        return self._k("leases")

    @property
    def deadlines(self) -> str:
        return self._k("deadlines")

    @property
    def finished(self) -> str:
        return self._k("finished")

    @property
    def jobs(self) -> str:
        return self._k("jobs")

    @property
    def seq(self) -> str:
        return self._k("seq")

    def templates(self) -> dict[str, str]:
        """What Lua scripts get: per-id keys as a prefix to append the id to, others whole."""
        out = {name: self._k(name, "") for name in _PER_ID}
        out.update({name: self._k(name) for name in _SINGLE})
        return out
