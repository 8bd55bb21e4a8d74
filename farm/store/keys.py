"""The Redis key schema: every key farm writes, in one place.

All keys share one prefix (`farm:` by default) so a farm can share a Redis with other users
and an ACL user can be limited to `~farm:*`. Lua scripts never spell a key: they receive
these templates in their config argument (`Keys.templates()`), so this module stays the
only place a key is named.

    {p}job:{id}             hash    one job: state, attempt, spec (JSON), times in ms, result
    {p}log:{id}             stream  log chunks (field d; k=1 on farm's own lines), and an end marker (field e)
    {p}logcut:{id}          hash    entry id ending an attempt's head -> output bytes cut after it (over the cap)
    {p}queue:{pool}:{tenant} zset   a tenant's claimable job ids by dispatch order (priority, then FIFO)
    {p}tenants:{pool}       zset    backlogged tenants by stride-scheduling pass (lowest claims next)
    {p}pass:{pool}          hash    each tenant's last pass; field "" holds the pool's virtual time
    {p}waiting:{pool}       zset    every queued job id (claimable or parked) by ready time (ms)
    {p}group:{tenant}:{g}   hash    a concurrency group: running, limit
    {p}parked:{tenant}:{g}  zset    queued jobs of a full group, set aside by dispatch order
    {p}gq:{tenant}:{g}      set     queued job ids of a group (for supersede)
    {p}qdeadlines           zset    queued job ids by queue-timeout deadline (ms)
    {p}idem:{tenant}:{key}  string  "<job id> <body sha256>" for an Idempotency-Key, 24 h
    {p}wake:{pool}          list    wake-up tokens that idle executors block on (BLPOP)
    {p}running:{pool}       set     running job ids
    {p}leases               zset    running job ids by lease expiry (ms)
    {p}fencing              zset    running job ids whose lease expired, waiting for their node's fence (ms asked)
    {p}fences:{node}        zset    the same, per node: what that node's warden must kill and confirm
    {p}nodes                zset    nodes by their warden's last beat (ms)
    {p}instance             string  this farm's id: names its attempts' cgroups and containers on shared machines
    {p}restarts             hash    components farm restarted (redis, executor, ...) -> count
    {p}deadlines            zset    running job ids by server-side timeout (ms)
    {p}finished             zset    terminal job ids by finish time (ms), for retention
    {p}webhooks             zset    job ids whose result webhook is due, by due time (ms)
    {p}jobs                 zset    every job id by submission sequence (listing)
    {p}tenant_jobs:{tenant} zset    a tenant's job ids by submission sequence
    {p}jobids               zset    every job id, score 0: lex order resolves an id prefix (farm.store.ids)
    {p}seq                  string  submission sequence counter
    {p}stats:{pool}         hash    counters and histogram buckets (a field per bound) read by /metrics,
                                    the runs whose first job is in the pool's too
    {p}executors:{pool}     zset    executor ids by last-seen time (ms)
    {p}executor:{id}        hash    one executor: pool, state, job, pid
    {p}policy:{pool}        hash    the pool's capacity policy: version, policy (JSON), by, at; seeded (seeds so far);
                                    seeding (a seed's summary so far while parts of it are to come)
    {p}policy_audit:{pool}  list    every policy change, newest first: version, by, at, before, after (or seed)
    {p}decisions:{pool}     list    the autoscaler's recent decisions, newest first
    {p}cachekeys:{tenant}|{repo} zset  cache entries of a repository, lex-ordered members
                                    "<key>\0<tier>\0<ref>\0<entry id>" (exact and prefix lookups)
    {p}cacheentry:{id}      hash    one cache entry: scope, key, manifest digest, bytes, blobs, created, used
    {p}cachelru:{tenant}    zset    a tenant's cache entry ids by last use (ms)
    {p}cachebytes:{tenant}  hash    a tenant's cache bytes by tier
    {p}cacherefs            hash    blob digest -> entries referring to it
    {p}learned:{pool}       string  what the pool's policy learned, so a restarted autoscaler resumes: JSON
                                    {schema, kind, limits, own} (farm.autoscale.policy.Memory.to_doc), no pickle;
                                    and lead_s, the provisioning lead time measured (farm.autoscale.live)
    {p}demand:{pool}        stream  arrivals (field a: queued_at ms), starts (field w: wait ms) and attempts'
                                    ends (field d: ran ms), capped, read by the autoscaler
    {p}history:{pool}       hash    hour since the epoch -> that hour's demand, JSON {a: arrivals by second,
                                    d: durations by bin} (farm.autoscale.demand), the last autoscaler.history_weeks
    {p}run:{id}             hash    one run: tenant, name, labels, jobs (JSON list of ids), created/started/finished,
                                    jobs ended and by state (n:{state}), callback, webhook
    {p}runs                 zset    every run id by submission sequence (listing)
    {p}tenant_runs:{tenant} zset    a tenant's run ids by submission sequence
    {p}runids               zset    every run id, score 0: lex order resolves an id prefix (farm.store.ids)
    {p}rungroup:{tenant}:{g} set    a tenant's runs in a supersede group that have not ended
    {p}runs_finished        zset    ended run ids by finish time (ms), for retention
    {p}runstats             hash    farm-wide run counters of farms before runs counted per pool (not read)
    {p}tqueued              hash    tenant -> jobs it has queued (the submit quota)
    {p}session:{id}         hash    a portal session (farm.api.ui), {id} the sha256 of its cookie: token (the
                                    token's sha256), csrf, created (ms); it expires (farm.store.sessions)
    {p}account:{tenant}     hash    a tenant managed while farm runs: weight, max_queued, disabled, created, by
                                    (farm.store.accounts); farm.yaml's tenants seed theirs
    {p}accounts             zset    tenant names, score 0 (listing)
    {p}token:{id}           hash    one API token: tenant, role, name, tier, sha256 of the secret, created,
                                    expires, last_used, revoked (ms); the secret itself is never stored
    {p}tokenhash            hash    sha256 of a live token's secret -> its id (resolve_token.lua)
    {p}accountsbus          channel a token revoked or rotated, a tenant disabled: API replicas drop the tokens they cached
    {p}tenant_tokens:{tenant} zset  a tenant's token ids by creation (ms)
    {p}audit                stream  the audit trail: one entry per changing or refused request (farm.store.audit),
                                    trimmed to retention.audit_s
    {p}auditrefused         hash    the audit trail's refusal rate limit: field "" the minute counted, and one count
                                    per JSON [client, tenant, status] (scripts/audit_refused.lua)
    {p}notify:{tenant}      hash    a tenant's notification subscriptions: id -> JSON (farm.store.notify)
    {p}notifyq              zset    notifications due, by due time (ms): ends to fan out ("job:<id>", "run:<id>")
                                    and deliveries ("<end>/<subscription id>")
    {p}notifymsg:{id}       hash    one delivery: tenant, subscription, event (JSON), attempts, last error
    {p}deadletters:{tenant} list    deliveries given up, newest first, capped (JSON, farm.notify.DeadLetter)
    {p}outcomes:{tenant}    hash    "job|<branch>|<name>" or "run|<name>" -> the last outcome seen (failed/ok): "fixed"
    {p}signingkeys          hash    job identity signing keys: kid -> JSON (private JWK, created, retired) (farm.store.identity)
    {p}idreq:{sha256}       hash    a one-attempt request token for an ID token: job, attempt; expires with the attempt
    {p}idrate:{sha256}      string  ID tokens that request token asked for in its current minute (expires with the minute)
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "farm:"
EXECUTOR_TTL_MS = 60_000  # an executor entry outlives its last report by this much

_PER_ID = (
    "job", "log", "queue", "tenants", "pass", "waiting", "wake", "running", "tenant_jobs", "stats",
    "executors", "executor", "group", "parked", "gq", "idem", "policy", "policy_audit", "decisions", "demand", "history", "learned",
    "cachekeys", "cacheentry", "cachelru", "cachebytes", "fences", "logcut", "run", "tenant_runs", "rungroup", "session",
    "account", "token", "tenant_tokens", "notify", "notifymsg", "deadletters", "outcomes", "idreq", "idrate",
)  # fmt: skip
_SINGLE = ("leases", "deadlines", "qdeadlines", "finished", "webhooks", "jobs", "seq", "cacherefs", "fencing", "nodes", "instance",
           "restarts", "runs", "runs_finished", "runstats", "tqueued", "jobids", "runids",
           "accounts", "accountsbus", "tokenhash", "audit", "auditrefused", "notifyq", "signingkeys")  # fmt: skip


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def _k(self, name: str, suffix: str | None = None) -> str:
        return f"{self.prefix}{name}" if suffix is None else f"{self.prefix}{name}:{suffix}"

    def job(self, job_id: str) -> str:
        return self._k("job", job_id)

    def log(self, job_id: str) -> str:
        return self._k("log", job_id)

    def logcut(self, job_id: str) -> str:
        return self._k("logcut", job_id)

    def queue(self, pool: str, tenant: str) -> str:
        return self._k("queue", f"{pool}:{tenant}")

    def tenants(self, pool: str) -> str:
        return self._k("tenants", pool)

    def passes(self, pool: str) -> str:
        return self._k("pass", pool)

    def group(self, tenant: str, group: str) -> str:
        return self._k("group", f"{tenant}:{group}")

    def parked(self, tenant: str, group: str) -> str:
        return self._k("parked", f"{tenant}:{group}")

    def group_queued(self, tenant: str, group: str) -> str:
        return self._k("gq", f"{tenant}:{group}")

    def policy(self, pool: str) -> str:
        return self._k("policy", pool)

    def policy_audit(self, pool: str) -> str:
        return self._k("policy_audit", pool)

    def decisions(self, pool: str) -> str:
        return self._k("decisions", pool)

    def cache_keys(self, tenant: str, repo: str) -> str:
        return self._k("cachekeys", f"{tenant}|{repo}")

    def cache_entry(self, entry_id: str) -> str:
        return self._k("cacheentry", entry_id)

    def cache_lru(self, tenant: str) -> str:
        return self._k("cachelru", tenant)

    def cache_bytes(self, tenant: str) -> str:
        return self._k("cachebytes", tenant)

    @property
    def cache_refs(self) -> str:
        return self._k("cacherefs")

    def learned(self, pool: str) -> str:
        return self._k("learned", pool)

    def demand(self, pool: str) -> str:
        return self._k("demand", pool)

    def demand_history(self, pool: str) -> str:
        return self._k("history", pool)

    def idempotency(self, tenant: str, key: str) -> str:
        return self._k("idem", f"{tenant}:{key}")

    def run(self, run_id: str) -> str:
        return self._k("run", run_id)

    def tenant_runs(self, tenant: str) -> str:
        return self._k("tenant_runs", tenant)

    def run_group(self, tenant: str, group: str) -> str:
        return self._k("rungroup", f"{tenant}:{group}")

    @property
    def runs(self) -> str:
        return self._k("runs")

    @property
    def run_ids(self) -> str:
        return self._k("runids")

    @property
    def runs_finished(self) -> str:
        return self._k("runs_finished")

    @property
    def runstats(self) -> str:
        return self._k("runstats")

    @property
    def tqueued(self) -> str:
        return self._k("tqueued")

    def session(self, session_digest: str) -> str:
        return self._k("session", session_digest)

    def account(self, tenant: str) -> str:
        return self._k("account", tenant)

    @property
    def accounts(self) -> str:
        return self._k("accounts")

    def token(self, token_id: str) -> str:
        return self._k("token", token_id)

    @property
    def accounts_bus(self) -> str:
        return self._k("accountsbus")

    @property
    def token_hash(self) -> str:
        return self._k("tokenhash")

    def tenant_tokens(self, tenant: str) -> str:
        return self._k("tenant_tokens", tenant)

    @property
    def audit(self) -> str:
        return self._k("audit")

    @property
    def audit_refused(self) -> str:
        return self._k("auditrefused")

    def notify(self, tenant: str) -> str:
        return self._k("notify", tenant)

    @property
    def notify_queue(self) -> str:
        return self._k("notifyq")

    def notify_message(self, delivery_id: str) -> str:
        return self._k("notifymsg", delivery_id)

    def dead_letters(self, tenant: str) -> str:
        return self._k("deadletters", tenant)

    def outcomes(self, tenant: str) -> str:
        return self._k("outcomes", tenant)

    @property
    def signing_keys(self) -> str:
        return self._k("signingkeys")

    def id_request(self, token_sha256: str) -> str:
        return self._k("idreq", token_sha256)

    def id_rate(self, token_sha256: str) -> str:
        return self._k("idrate", token_sha256)

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

    def fences(self, node: str) -> str:
        return self._k("fences", node)

    @property
    def fencing(self) -> str:
        return self._k("fencing")

    @property
    def nodes(self) -> str:
        return self._k("nodes")

    @property
    def instance(self) -> str:
        return self._k("instance")

    @property
    def restarts(self) -> str:
        return self._k("restarts")

    @property
    def leases(self) -> str:
        return self._k("leases")

    @property
    def deadlines(self) -> str:
        return self._k("deadlines")

    @property
    def qdeadlines(self) -> str:
        return self._k("qdeadlines")

    @property
    def finished(self) -> str:
        return self._k("finished")

    @property
    def webhooks(self) -> str:
        return self._k("webhooks")

    @property
    def jobs(self) -> str:
        return self._k("jobs")

    @property
    def job_ids(self) -> str:
        return self._k("jobids")

    @property
    def seq(self) -> str:
        return self._k("seq")

    def templates(self) -> dict[str, str]:
        """What Lua scripts get: per-id keys as a prefix to append the id to, others whole."""
        out = {name: self._k(name, "") for name in _PER_ID}
        out.update({name: self._k(name) for name in _SINGLE})
        return out
