"""Configuration: environment variables `FARM_*` over an optional `farm.yaml`, over defaults.

Nested groups use `__` in environment variables (`FARM_LEASE__LEASE_S=5`). Two settings
are top-level because users set them most: `FARM_REDIS_URL` (unset: `farm up` runs an
embedded server) and `FARM_ADMIN_TOKEN`.

No import-time singleton: callers build `Settings.load(path)` and pass it down
(`create_app(settings)`), so tests build their own.
"""

from __future__ import annotations

import contextvars
import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from farm.autoscale.kinds import DEFAULT_LEAD_S, LivePolicy
from farm.identity import AUDIENCE
from farm.models import RUN_JOBS_MAX

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("farm_config", default=None)

MiB = 1024 * 1024
# The p95 queue wait a pool is held to when its capacity policy names none (see
# autoscaler.wait_target_s): the fixed limit FarmQueueWaitHigh had before pools had targets.
DEFAULT_WAIT_TARGET_S = 300.0


class TenantConfig(BaseModel):
    """A tenant and the sha256 (hex) of its bearer token; the token itself is never stored.
    `weight` is its share of a busy pool against other tenants (fair share)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    # A second token for the tenant's protected refs (default and release branches): jobs
    # submitted with it read and write the protected cache tier. See farm/cache/scope.py.
    protected_token_sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    # Result webhooks: signed with this secret, sent only to these hosts ("host" or "host:port").
    webhook_secret: SecretStr | None = None
    webhook_hosts: list[str] = Field(default_factory=list)
    # Secrets jobs may reference by name ({"ref": name}) instead of sending the value.
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # Permissions that reach past a job's own attempt (farm/permissions.py); the admin has both.
    allow_host_network: bool = False  # `network: host` reaches the node's loopback services
    # git URLs under these exempt from the source checks (protocol, public host): e.g. file:///srv/mirrors/, https://git.corp.internal/
    git_url_prefixes: list[str] = Field(default_factory=list)
    # The most jobs the tenant may have queued at once (429 past it); None: api.max_queued_per_tenant.
    max_queued: Annotated[int | None, Field(ge=1, le=10_000_000)] = None


class RedisSettings(BaseModel):
    # Embedded server only: appendfsync policy. `everysec` may lose up to one second of
    # acknowledged writes if the *machine* crashes; a crash of the server process alone
    # loses nothing (the kernel still holds the written pages).
    aof_fsync: Literal["always", "everysec", "no"] = "everysec"
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: pick a free port
    # Embedded server only: the most memory it may take ("auto": a quarter of this machine's,
    # "0": no limit). Past it writes are refused (503), rather than the machine running out:
    # every key farm keeps matters, so nothing is evicted.
    maxmemory: Annotated[str, Field(pattern=r"^(auto|0|[0-9]+[kmgKMG]?[bB]?)$")] = "auto"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    run_reaper: bool = True  # every API replica may run it: its steps are atomic and idempotent
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * MiB)] = MiB  # larger bodies: 413, unread
    # Seconds a request's body may take to arrive, from its head (408 past it, and the request's
    # in-flight slot is freed): a client that sends less than its Content-Length must not hold
    # one of its tenant's slots until the connection dies.
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_run_jobs: Annotated[int, Field(ge=1, le=RUN_JOBS_MAX)] = 500  # jobs in one run (422 past it)
    # Jobs one tenant may have queued at once (429 past it; tenants[].max_queued overrides it,
    # the admin has none): Redis holds the queue, and one tenant must not fill it for all.
    max_queued_per_tenant: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # Log followers (`?follow=true`) one tenant may hold open per API process (429 past it),
    # and how long one may follow before the stream ends (follow again with ?offset=).
    max_followers_per_tenant: Annotated[int, Field(ge=1, le=10_000)] = 20
    # Requests one tenant may have in progress at once per API process (429 past it): under
    # the 40 worker threads sync handlers share, so no tenant holds them all.
    max_inflight_per_tenant: Annotated[int, Field(ge=1, le=10_000)] = 16
    follow_max_s: Annotated[float, Field(gt=0)] = 6 * 3600.0
    # Connections one API process serves at once; past it, requests get a 503 at once.
    max_connections: Annotated[int, Field(ge=16, le=100_000)] = 4096
    # Seconds in-flight requests (and followers) get when the server stops; then they are cut.
    graceful_shutdown_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    # Refused requests (401/403) the audit trail records per client a minute; past it they are
    # counted, and one entry says how many: a flood of bad tokens cannot flood the trail.
    audit_refusals_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 20


class ExecutorSettings(BaseModel):
    count: Annotated[int, Field(ge=0, le=1000)] = 2
    runtime: Literal["local", "docker", "dind", "sandbox", "noop"] = "local"
    pool: str = "default"
    idle_wait_s: Annotated[float, Field(gt=0, le=60)] = 1.0  # longest block on the wake list
    # An executor waits this long after it is ready before it first reports so: a stand-in for a
    # VM's or pod's boot, for benchmarks on one machine (bench/twin.py). 0 on a real farm.
    startup_delay_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    kill_grace_s: Annotated[float, Field(ge=0, le=60)] = 0.5  # SIGTERM -> SIGKILL
    # Processes an attempt of the local runtime may have at once (its cgroup's pids.max):
    # a fork bomb stops there, and is killed with its attempt. None: no limit.
    pids_limit: Annotated[int | None, Field(ge=16)] = 4096
    # The most a job's workspace may hold: where farm can mount (root), each workspace is an
    # ext4 filesystem of this size of its own (agents/quota.py), and a job that writes past
    # it fails with `disk_quota`. None: no limit.
    disk_quota_bytes: Annotated[int | None, Field(ge=16 * MiB)] = 4 * 1024 * MiB
    # An executor claims no job while the filesystem of its workspaces has less free than
    # this (as Jenkins takes an agent offline on low disk): a job would only fail there. 0: never.
    min_free_disk_bytes: Annotated[int, Field(ge=0)] = 256 * MiB
    # On a Ray cluster: the custom resources each executor actor needs (e.g. {"farm-dood": 1},
    # which the Helm chart's worker groups provide), and that the autoscaler asks Ray for
    # ahead of demand so KubeRay adds worker pods. Empty on one machine. `pool_resources`
    # names them per pool ({"gpu": {"farm-gpu": 1}}): a pool's executors land only on nodes
    # that have its resources; pools not named there use `ray_resources`.
    ray_resources: dict[str, float] = Field(default_factory=dict)
    pool_resources: dict[str, dict[str, float]] = Field(default_factory=dict)

    def resources(self, pool: str) -> dict[str, float]:
        """The Ray resources an executor of `pool` needs."""
        return dict(self.pool_resources.get(pool, self.ray_resources))
    # The node's name for fencing (agents/warden.py): default the host name, which a pod or
    # machine keeps for its life.
    node: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")] = None


RAY_NAMESPACE = "farm"  # the Ray namespace of farm's named actors (executors, wardens, the autoscaler)


class RaySettings(BaseModel):
    # A Ray cluster to join (its GCS address, host:port, run from one of its nodes); unset,
    # `farm up` starts a Ray of its own on loopback. FARM_RAY__ADDRESS or `--ray-address`.
    address: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9._\[\]:-]+:[0-9]+$")] = None


class AutoscalerSettings(BaseModel):
    enabled: bool = True  # pools without a capacity policy are left alone either way
    interval_s: Annotated[float, Field(gt=0, le=600)] = 2.0  # one observe -> decide -> act turn
    lead_s: Annotated[float, Field(gt=0)] = DEFAULT_LEAD_S  # provisioning lead time assumed until one is measured
    start_timeout_s: Annotated[float, Field(gt=0)] = 300.0  # an executor not ready by then is given up
    keep_learned_s: Annotated[float, Field(ge=0)] = 300.0  # how often what a policy learned is kept in Redis
    # Each pool's demand by hour kept this long (farm.autoscale.demand): what a pool switched to the
    # predictive policy (or seeded) learns from before its first turn.
    history_weeks: Annotated[int, Field(ge=1, le=52)] = 8
    # How long the turn that starts such a learning waits for it, so the next decision already
    # uses it (a few weeks of a busy pool replay in seconds); a longer one goes on beside the
    # turns, and the decisions say that it does.
    learn_wait_s: Annotated[float, Field(ge=0, le=600)] = 20.0
    # The p95 queue wait of a pool whose capacity policy has no target_p95_s (or that has no
    # policy): exported as farm_pool_wait_target_seconds, which FarmQueueWaitHigh compares with.
    wait_target_s: Annotated[float, Field(gt=0)] = DEFAULT_WAIT_TARGET_S


class LeaseSettings(BaseModel):
    lease_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    heartbeat_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    timeout_grace_s: Annotated[float, Field(ge=0, le=600)] = 5.0
    reaper_interval_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    # A node whose warden has not beaten for this long is presumed gone, with its processes:
    # an expired lease there is requeued without waiting for the node to fence the attempt.
    node_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    warden_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.5  # how often a node's warden fences and sweeps

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> "LeaseSettings":
        if self.heartbeat_s * 2 > self.lease_s:
            raise ValueError("heartbeat_s must be at most half of lease_s")
        return self


class RetentionSettings(BaseModel):
    jobs_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    log_max_bytes: Annotated[int, Field(ge=1024)] = 10 * MiB
    keep_workspaces: bool = False  # keep a finished job's workspace until the job is purged
    audit_s: Annotated[int, Field(ge=3600)] = 90 * 24 * 3600  # the audit trail's entries (farm.store.audit)


class WebhookSettings(BaseModel):
    enabled: bool = True  # each API replica delivers; deliveries are leased, so none is sent twice at once
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    backoff_s: Annotated[float, Field(gt=0)] = 2.0  # doubles per attempt
    max_backoff_s: Annotated[float, Field(gt=0)] = 600.0
    interval_s: Annotated[float, Field(gt=0)] = 0.5


class NotifySettings(BaseModel):
    """Notifications (farm.notify, farm.notifier): mail, chat and signed webhooks when jobs
    and runs fail or are fixed. Each API replica sends; deliveries are leased, so none is
    sent twice at once."""

    enabled: bool = True
    # Mail: no `email` subscription is taken without an SMTP server. STARTTLS: used when the
    # server offers it ("when_offered"), demanded ("required"), or not tried ("never");
    # credentials are never sent over a connection without TLS.
    smtp_host: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9._:\[\]-]{1,253}$")] = None
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    smtp_from: Annotated[str, Field(max_length=254, pattern=r"^[^\s@<>,\"]{1,64}@[^\s@<>,\"]{1,189}$")] = "farm@localhost"
    smtp_starttls: Literal["when_offered", "required", "never"] = "when_offered"
    smtp_username: Annotated[str | None, Field(min_length=1, max_length=256)] = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = None  # the CA a STARTTLS server's certificate is checked against (default: the system's)
    # Links in messages: <portal_url>/ui/jobs/<id>; unset, messages name the command instead.
    portal_url: Annotated[str | None, Field(max_length=500, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] = None
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0  # one send (a connect, a read)
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8  # then the delivery is a dead letter
    backoff_s: Annotated[float, Field(gt=0, le=3600)] = 5.0  # doubles per attempt
    max_backoff_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0
    interval_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    max_subscriptions: Annotated[int, Field(ge=1, le=1000)] = 50  # per tenant (409 past it)
    dead_letters_max: Annotated[int, Field(ge=1, le=100_000)] = 1000  # per tenant, the newest kept

    @model_validator(mode="after")
    def _credentials_together(self) -> "NotifySettings":
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("notify.smtp_username and notify.smtp_password go together")
        return self


_URL = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"


class IdentitySettings(BaseModel):
    """Job identity (farm/identity.py): the OIDC ID tokens steps of `id_token: true` jobs ask for."""

    enabled: bool = True  # off: the discovery document, JWKS and token endpoint answer 404
    # Every token's `iss`, where relying parties fetch /.well-known/openid-configuration: on a
    # real farm an https URL they reach. Unset: http://<api.host>:<api.port>.
    issuer: Annotated[str | None, Field(max_length=500, pattern=_URL)] = None
    # What steps ask at (FARM_ID_TOKEN_REQUEST_URL): the API as the executors' steps reach it.
    # Unset: http://<api.host>:<api.port>/id-token.
    request_url: Annotated[str | None, Field(max_length=500, pattern=_URL)] = None
    token_ttl_s: Annotated[int, Field(ge=1, le=3600)] = 300  # a token's lifetime (exp - iat)
    # ID tokens one attempt may ask for in a minute (more: 429): each is a signature on the
    # API's CPU, and /id-token is outside the gate's per-tenant caps
    requests_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 60
    rotate_s: Annotated[float, Field(ge=1, le=366 * 86400)] = 7 * 86400.0  # a signing key signs this long
    # A replaced key stays in the JWKS this long (at least token_ttl_s: its last tokens verify).
    overlap_s: Annotated[float, Field(ge=1, le=30 * 86400)] = 3600.0
    # Audiences steps may ask for; empty: any well-formed one.
    audiences: Annotated[list[Annotated[str, Field(pattern=AUDIENCE)]], Field(max_length=100)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _overlap_covers_a_token(self) -> "IdentitySettings":
        if self.overlap_s < self.token_ttl_s:
            raise ValueError("overlap_s must be at least token_ttl_s: a retired key must outlive the tokens it signed")
        return self


class CacheSettings(BaseModel):
    dir: Path | None = None  # blobs; default <data_dir>/cache (a shared volume in a cluster)
    quota_bytes: Annotated[int, Field(ge=0)] = 20 * 1024 * MiB  # per tenant; least recently used go first
    protected_share: Annotated[float, Field(ge=0, le=1)] = 0.5  # of the quota, kept for the protected tier
    max_entry_bytes: Annotated[int, Field(ge=1)] = 4 * 1024 * MiB  # a save or restore over this is refused
    max_entry_files: Annotated[int, Field(ge=1)] = 1_000_000
    restore_threads: Annotated[int, Field(ge=1, le=64)] = 4
    # Warm restores: each node unpacks an entry once and mounts it as an overlay's lower layer.
    overlay: bool = True  # needs root; without it entries are unpacked into the workspace
    node_dir: Path | None = None  # default <data_dir>/cache-node (node-local disk)
    node_max_bytes: Annotated[int, Field(ge=0)] = 20 * 1024 * MiB


class ImageSettings(BaseModel):
    # Where image jobs with push: true push (host[:port], e.g. 127.0.0.1:5000); a registry on
    # loopback is plain HTTP to Docker, any other needs TLS.
    registry: str | None = None


class ArtifactSettings(BaseModel):
    max_file_bytes: Annotated[int, Field(ge=1)] = 512 * MiB
    max_job_bytes: Annotated[int, Field(ge=1)] = 2048 * MiB
    max_files: Annotated[int, Field(ge=1)] = 1000


class DockerSettings(BaseModel):
    default_image: str = "farm/busybox:latest"
    cpus: Annotated[float | None, Field(gt=0)] = 2.0
    memory: str | None = "2g"
    # "auto": run step containers as farm's own uid:gid so workspace files stay ours.
    user: str = "auto"
    pids_limit: Annotated[int | None, Field(ge=16)] = 4096  # processes per step container (a fork bomb stops there)
    # The image's filesystem read-only, /tmp a 256 MiB tmpfs (counted in the step's memory),
    # /workspace writable: a step container has no writable layer to fill the node's disk with
    # past the job's disk quota (executors.disk_quota_bytes bounds the workspace).
    read_only_rootfs: bool = True


class SandboxSettings(BaseModel):
    """The sandbox runtime (agents/runtimes/sandbox.py): steps in gVisor on the node's daemon,
    image builds rootless in a user namespace (agents/runtimes/rootless.py)."""

    # The daemon's names for runsc (dockerd's `runtimes`): one with "--network=none" for the
    # default, one with "--network=host" for tenants allowed `network: host`.
    docker_runtime: str = "runsc"
    host_network_runtime: str = "runsc-host"
    user: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,9}:[1-9][0-9]{0,9}$")] = "65532:65532"  # never root
    tmp_bytes: Annotated[int, Field(ge=MiB)] = 256 * MiB  # /tmp, a tmpfs: the root filesystem is read-only
    # Rootless image builds: the unprivileged user buildah runs as (it needs a range in
    # /etc/subuid and /etc/subgid), and where the layer stores live, one per tenant and tier.
    build_user: str = "farm-build"
    build_store_dir: Path | None = None  # default <data_dir>/rootless
    build_store_max_bytes: Annotated[int, Field(ge=0)] = 20 * 1024 * MiB  # per store; over it, pruned after a build


class DindSettings(BaseModel):
    """The dind runtime: a private Docker daemon per executor (agents/runtimes/dind.py)."""

    # A daemon someone else runs for this executor (the Helm chart's sidecar), e.g.
    # unix:///var/run/dind/docker.sock; unset: farm starts one in a container of `image`
    # on the host's daemon, and removes it when the executor drains.
    docker_host: str | None = None
    image: str = "farm/executor-dind:dev"
    storage_driver: Literal["overlay2", "fuse-overlayfs", "vfs"] = "overlay2"
    # How the daemon's container runs. `privileged: true` is the simple choice where it is
    # allowed; without it these capabilities and options let dockerd run its containers.
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=lambda: ["ALL"])
    cap_drop: list[str] = Field(default_factory=lambda: ["SYS_RESOURCE"])
    security_opt: list[str] = Field(default_factory=lambda: ["seccomp=unconfined", "apparmor=unconfined"])
    # Layer stores: data roots kept per pool on this machine, each used by one daemon at a
    # time, so a fresh executor's daemon starts with the layers earlier ones built.
    layer_stores: Annotated[int, Field(ge=0, le=64)] = 4
    store_dir: Path | None = None  # default <data_dir>/dind
    store_max_bytes: Annotated[int, Field(ge=0)] = 50 * 1024 * MiB  # over it, unused images are pruned at drain
    # Images a private daemon lacks (step images, FROM images) are copied from the host's
    # daemon once per layer store; without a host daemon they must come from a registry.
    copy_images: bool = True
    # Copied in when a daemon starts (once per layer store): base images that steps running
    # `docker build`/`docker run` themselves need (image jobs' FROM images are copied anyway).
    images: list[str] = Field(default_factory=list)
    # The daemon's environment, e.g. HTTPS_PROXY/NO_PROXY to route (or refuse) its pulls.
    env: dict[str, str] = Field(default_factory=dict)
    start_timeout_s: Annotated[float, Field(gt=0, le=600)] = 60.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FARM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Path("~/.farm")
    redis_url: str | None = None
    admin_token: SecretStr | None = None
    pools: Annotated[list[str], Field(min_length=1)] = ["default"]
    tenants: list[TenantConfig] = Field(default_factory=list)

    redis: RedisSettings = RedisSettings()
    ray: RaySettings = RaySettings()
    autoscaler: AutoscalerSettings = AutoscalerSettings()
    cache: CacheSettings = CacheSettings()
    images: ImageSettings = ImageSettings()
    api: ApiSettings = ApiSettings()
    executors: ExecutorSettings = ExecutorSettings()
    lease: LeaseSettings = LeaseSettings()
    retention: RetentionSettings = RetentionSettings()
    docker: DockerSettings = DockerSettings()
    dind: DindSettings = DindSettings()
    sandbox: SandboxSettings = SandboxSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    webhooks: WebhookSettings = WebhookSettings()
    notify: NotifySettings = NotifySettings()
    identity: IdentitySettings = IdentitySettings()
    # Capacity policies by pool (the first version of each; later ones come through the API).
    policies: dict[str, LivePolicy] = Field(default_factory=dict)

    @property
    def cache_dir(self) -> Path:
        return self.cache.dir or self.data_dir / "cache"

    @property
    def cache_node_dir(self) -> Path:
        return self.cache.node_dir or self.data_dir / "cache-node"

    @property
    def dind_dir(self) -> Path:
        return self.dind.store_dir or self.data_dir / "dind"

    @property
    def rootless_dir(self) -> Path:
        return self.sandbox.build_store_dir or self.data_dir / "rootless"

    @property
    def artifact_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def api_url(self) -> str:
        host = self.api.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.api.port}"

    @property
    def id_issuer(self) -> str:
        return (self.identity.issuer or self.api_url).rstrip("/")

    @property
    def id_request_url(self) -> str:
        return self.identity.request_url or f"{self.api_url}/id-token"

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="after")
    def _executor_pool_exists(self) -> "Settings":
        if self.executors.pool not in self.pools:
            raise ValueError(f"executors.pool {self.executors.pool!r} is not in pools {self.pools}")
        unknown = sorted(set(self.policies) - set(self.pools))
        if unknown:
            raise ValueError(f"policies for pools that do not exist: {', '.join(unknown)}")
        unknown = sorted(set(self.executors.pool_resources) - set(self.pools))
        if unknown:
            raise ValueError(f"executors.pool_resources for pools that do not exist: {', '.join(unknown)}")
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError("tenant names must be unique")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config: Path | None = None, **overrides: Any) -> "Settings":
        """Settings from overrides, then FARM_* env, then `config` (YAML), then defaults."""
        if config is not None and not config.is_file():
            raise FileNotFoundError(f"config file not found: {config}")
        token = _config_file.set(config)
        try:
            return cls(**overrides)
        finally:
            _config_file.reset(token)


def hash_token(token: str) -> str:
    """sha256 hex of a bearer token. Tokens are long random strings, so a fast hash is
    enough (as GitHub does for its tokens); a slow KDF would only slow every request."""
    return hashlib.sha256(token.encode()).hexdigest()
