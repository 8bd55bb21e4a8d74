"""farm: an elastic build farm. Jobs over HTTP, a Redis-backed queue, Ray executors.

    api/         the HTTP API: an app factory, one router per resource
    autoscale/   capacity: pure policies, the forecaster, the live autoscaler
    cache/       dependency cache entries on disk: archives, blobs, keys and trust scopes
    cli/         the `farm` command
    sim/         `farm simulate`: traces, the simulator, demand history, tuning
    store/       the Redis adapter: every key farm keeps, and the scripts that change them
    actors       the one reach into agents: the executor, warden and lifeline farm starts
    addresses    which hosts a git checkout may reach (pure)
    artifacts    artifact storage: files a job keeps, by job, attempt and name
    audit        the audit trail's record, its stream form and its filters (pure)
    client       a small HTTP client for the farm API (the CLI's)
    contexts     client contexts: where the CLI finds a farm, and its token
    durations    durations as people write them: 90s, 30m, 12h, 30d (pure)
    embedded     `farm up`: the whole farm on one machine
    errors       the one error tree (drawn in its docstring)
    fieldnames   the fields a schema accepts, and the "did you mean" of an unknown one (pure)
    identity     job identity: an attempt's OIDC ID token claims, signing keys and their rotation (pure)
    logtext      a job's log as a reader sees it (pure)
    loops        background loops: a `run_once` every interval on a thread until stopped
    metrics      Prometheus metrics, on an injected CollectorRegistry
    models       job models and the job state machine (pure)
    notifier     sends notifications (mail, chat, signed webhooks), retried, with dead letters
    notify       notifications: subscriptions, which of them hear of an end, the messages (pure)
    paths        path checks for what a tenant names inside a workspace (pure)
    permissions  what a tenant may ask of farm beyond its own steps (pure)
    ray_seam     the seam to Ray: actor names, classes and placement; the executor fleet
    roles        what each role may do, and how a route declares the role it needs (pure)
    reaper       requeues, times out, expires and purges jobs; forgets vanished executors
    secrets      job secrets: resolved from tenants' secrets, masked in logs
    settings     configuration: `FARM_*` over `farm.yaml` over defaults
    supervisor   `farm up`'s supervisor: restarts a part of the farm that dies
    wait         why a queued job waits and when it should start (pure)
    webhooks     result webhooks of jobs and runs
"""

__version__ = "0.1.0"
