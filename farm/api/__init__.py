"""HTTP API: an app factory, one router per resource, errors mapped in one handler.

    app          `create_app(settings)`: the app, its state, its handlers and the gate
    server       uvicorn on httptools, with the limits a server facing strangers needs
    gate         what every /v1 request passes first: token, the role a route needs, body limits, per-tenant cap
    recorder     the gate's audit writer: answered requests' records, batched into one round trip
    auth         bearer tokens: a token maps to a tenant, a role and a tier; cached a second per process
    deps         what a route may ask for, as `Annotated` aliases
    errors       how errors leave the API: one body shape, one mapping from the error tree
    public       the response models of the routes that are not about one job
    resolver     host names looked up at submit, within a bound
    jobs         /v1/jobs
    wait         /v1/jobs/{id}/wait: why a job waits, when it should start
    runs         /v1/runs
    queue        /v1/queue and /v1/executors
    pools        /v1/pools: pools, their capacity policies and the autoscaler's decisions
    caches       /v1/caches
    audit        /v1/audit: the audit trail, paged and exported as JSON lines
    notify       /v1/notifications: a tenant's notification subscriptions and dead letters
    accounts     /v1/whoami, /v1/login, /v1/tenants and /v1/tokens: accounts and their tokens
    health       /healthz and /metrics
    identity     /.well-known/openid-configuration, its JWKS, and /id-token: a step's OIDC ID token
    ui/          /ui: the portal, web pages on the API's handlers and tokens
"""

from farm.api.app import create_app

__all__ = ["create_app"]
