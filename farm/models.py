"""Job models: what a CI system submits, what farm stores, and the state machine between.

Invariants:
- `JobSpec` refuses unknown fields; pools are checked against settings by the service layer.
- Every change of `JobState` is one edge of `TRANSITIONS`; `check_transition` refuses the rest.
  The Lua scripts in `farm.store.scripts` implement exactly these edges (a unit test walks
  the table against the scripts' declared edges).
- Times are stored as integer milliseconds of the Redis server clock and shown as RFC 3339
  UTC strings.
- Pure module: no I/O, no redis/docker/ray/fastapi imports.
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from farm.cache.scope import check_template
from farm.errors import FarmError, IllegalTransition
from farm.paths import safe_path


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT, JobState.EXPIRED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset(
        {
            JobState.RUNNING,  # an executor claimed it under a lease
            JobState.CANCELLED,  # cancelled (or superseded) before any executor took it
            JobState.EXPIRED,  # still queued when its queue_timeout_s ran out
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,  # every step exited 0
            JobState.FAILED,  # a step failed, the runtime failed, or retries for executor loss ran out
            JobState.CANCELLED,  # cancelled while running; the executor kills the step
            JobState.TIMED_OUT,  # the executor or the server-side reaper hit timeout_s
            JobState.QUEUED,  # lease expired within the retry budget: attempt + 1
        }
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
    JobState.EXPIRED: frozenset(),
}


def check_transition(src: JobState, dst: JobState) -> None:
    """Raise IllegalTransition unless src -> dst is an edge of TRANSITIONS."""
    if dst not in TRANSITIONS[src]:
        raise IllegalTransition(f"a job cannot go from {src} to {dst}")


class ErrorCode(StrEnum):
    """Why a job did not succeed (or why an attempt was retried)."""

    EXECUTOR_LOST = "executor_lost"
    STEP_FAILED = "step_failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # a newer job of its concurrency group replaced it
    QUEUE_TIMEOUT = "queue_timeout"
    SOURCE_FAILED = "source_failed"
    RUNTIME_ERROR = "runtime_error"
    BUILD_FAILED = "build_failed"  # an image job's build or push
    DISK_QUOTA = "disk_quota"  # the job wrote past its workspace's quota (executors.disk_quota_bytes)
    NEEDS_FAILED = "needs_failed"  # a job of its run that it needs did not succeed: it never ran


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _no_nul(v: str) -> str:
    # A NUL cannot reach a process (an argument, an environment value, a path), and a lone
    # surrogate (JSON's "\ud800") cannot be stored as UTF-8: refused here rather than
    # failing later.
    if "\x00" in v:
        raise ValueError("must not contain a NUL character")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (a lone surrogate cannot be stored)") from None
    return v


Text = Annotated[str, AfterValidator(_no_nul)]


def _shown_as_is(v: str) -> str:
    # A name shows in tables, logs and terminals: no control or format characters (an
    # escape sequence, a right-to-left override, a line separator) that would make it show
    # as something else.
    if not v.isprintable():
        bad = next(c for c in v if not c.isprintable())
        raise ValueError(f"must not contain control or format characters (U+{ord(bad):04X})")
    return v


Name = Annotated[str, AfterValidator(_no_nul), AfterValidator(_shown_as_is)]  # text a person reads in a table or a log line
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]  # as rfc3339() writes it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    name: Annotated[Name, Field(min_length=1, max_length=200)]
    run: Annotated[Text, Field(min_length=1, max_length=100_000)]
    image: Annotated[Text | None, Field(default=None, max_length=500)] = None


class GitSource(_Strict):
    url: Annotated[Text, Field(min_length=1, max_length=2000)]
    ref: Annotated[Text, Field(default="HEAD", min_length=1, max_length=500)] = "HEAD"

    @field_validator("ref")
    @classmethod
    def _ref_is_not_an_option(cls, v: str) -> str:
        # A ref starting with '-' would be read by git as an option.
        if v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError("ref must not start with '-' or contain white space")
        return v

    @field_validator("url")
    @classmethod
    def _url_is_not_an_option(cls, v: str) -> str:
        if v.startswith("-"):
            raise ValueError("url must not start with '-'")
        return v


class Source(_Strict):
    git: GitSource | None = None


class CacheSpec(_Strict):
    """A dependency cache: restored before the first step, saved after the last.

    `key` may use {{ hashFiles('poetry.lock') }} and {{ env.NAME }}; `restore_keys` are
    prefixes tried in order when the key itself is not found (the newest match wins)."""

    key: Annotated[str, Field(min_length=1, max_length=512)]
    restore_keys: Annotated[list[Annotated[str, Field(min_length=1, max_length=512)]], Field(max_length=10)] = Field(
        default_factory=list
    )
    paths: Annotated[list[Annotated[str, Field(min_length=1, max_length=1000)]], Field(min_length=1, max_length=50)]
    save: Literal["on_success", "always", "never"] = "on_success"

    @field_validator("key", "restore_keys")
    @classmethod
    def _key_template(cls, v: str | list[str]) -> str | list[str]:
        """A key is checked at submit as far as it can be without the workspace: its
        expressions parse, hashFiles paths stay inside, and the rest makes a valid key."""
        for template in [v] if isinstance(v, str) else v:
            try:
                check_template(template)
            except FarmError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("paths")
    @classmethod
    def _relative(cls, v: list[str]) -> list[str]:
        try:
            return [safe_path(p) for p in v]
        except FarmError as e:
            raise ValueError(str(e)) from None


class ImageBuild(_Strict):
    """An image job's build: the context and Dockerfile come from the job's source."""

    dockerfile: Annotated[str, Field(min_length=1, max_length=500)] = "Dockerfile"
    context: Annotated[str, Field(min_length=1, max_length=500)] = "."
    build_args: Annotated[dict[str, Annotated[Text, Field(max_length=4096)]], Field(max_length=64)] = Field(default_factory=dict)
    target: Annotated[Text | None, Field(default=None, max_length=200)] = None
    tags: Annotated[list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$",
                                              max_length=255)]], Field(min_length=1, max_length=20)]  # fmt: skip
    push: bool = False  # to settings.images.registry, as <registry>/<tag>
    network: Literal["none", "host"] = "none"  # host: RUN steps may reach the package registries

    @field_validator("dockerfile", "context")
    @classmethod
    def _inside(cls, v: str) -> str:
        if v == ".":
            return v
        try:
            return safe_path(v)
        except FarmError as e:
            raise ValueError(str(e).replace("cache path", "path")) from None


class ImageResult(_Strict):
    id: str  # the image id (sha256:...)
    tags: list[str]
    pushed: list[str] = Field(default_factory=list)  # <registry>/<tag>@<digest> of each pushed tag
    digest: str | None = None  # the registry's manifest digest, when pushed


class CacheResult(_Strict):
    """What a cache did for a job: how it restored, and whether it saved."""

    key: str  # the key as rendered
    restore: Literal["hit", "partial", "miss", "error"]
    matched_key: str | None = None
    restore_bytes: int = 0
    restore_s: float = 0.0
    restore_mb_s: float = 0.0
    warm: bool = False  # mounted from the executor node's copy of the entry: no bytes copied
    save: Literal["saved", "exists", "skipped", "nothing", "error"] | None = None
    save_bytes: int = 0
    save_s: float = 0.0
    error: str | None = None


class Concurrency(_Strict):
    """At most `limit` running jobs of `group` (per tenant). When the group is full, a new
    job waits (`queue`) or replaces the group's older queued jobs (`supersede`)."""

    group: Annotated[str, Field(pattern=_NAME.pattern)]
    limit: Annotated[int, Field(default=1, ge=1, le=10_000)] = 1
    on_full: Literal["queue", "supersede"] = "queue"


class SecretRef(_Strict):
    """A secret the tenant holds in farm's settings, by name."""

    ref: Annotated[str, Field(pattern=_NAME.pattern)]


REDACTED = "***"


def _check_env_names(names: list[str]) -> None:
    bad = [k for k in names if not _ENV_NAME.match(k)]
    if bad:
        raise ValueError(f"invalid environment variable names: {', '.join(sorted(bad))}")
    if any(k.startswith("FARM_") for k in names):
        raise ValueError("environment variables starting with FARM_ are reserved")


def _artifact_pattern(v: str) -> str:
    parts = v.split("/")
    if not v or v.startswith("/") or "\\" in v or "\x00" in v or ".." in parts:
        raise ValueError(f"artifact pattern {v!r} must be a relative path inside the workspace, without '..'")
    if any("**" in p and p != "**" for p in parts):
        raise ValueError(f"artifact pattern {v!r}: '**' must be a whole path component, as in 'dist/**/*.whl'")
    return v


# What JobSpec's validators check across fields, in its JSON schema too (OpenAPI 3.1 is JSON
# Schema 2020-12), so the document refuses what the API refuses: a build job has at least
# one step and no `build`; an image job has a `build` (and any number of steps).
_KIND_RULES = {
    "if": {"properties": {"kind": {"const": "image"}}, "required": ["kind"]},
    "then": {"required": ["build"], "properties": {"build": {"type": "object"}}},
    "else": {"required": ["steps"], "properties": {"steps": {"minItems": 1}, "build": {"type": "null"}}},
}


class JobSpec(_Strict):
    """What a CI system submits. Unknown fields are refused."""

    model_config = ConfigDict(json_schema_extra=_KIND_RULES)

    kind: Literal["build", "image"] = "build"
    pool: Annotated[str, Field(default="default", pattern=_NAME.pattern)] = "default"
    steps: Annotated[list[Step], Field(max_length=200, validate_default=True)] = Field(default_factory=list)
    build: Annotated[ImageBuild | None, Field(validate_default=True)] = None  # kind image: what to build (after any steps)
    env: Annotated[dict[str, Annotated[Text, Field(max_length=32_768)]], Field(max_length=256)] = Field(default_factory=dict)
    source: Source | None = None
    timeout_s: Annotated[int, Field(default=3600, ge=1, le=7 * 24 * 3600)] = 3600
    retries: Annotated[int, Field(default=2, ge=0, le=10)] = 2
    priority: Annotated[int, Field(default=50, ge=0, le=100)] = 50
    network: Literal["none", "host"] = "none"
    concurrency: Concurrency | None = None
    queue_timeout_s: Annotated[int | None, Field(default=None, ge=1, le=30 * 24 * 3600)] = None
    artifacts: Annotated[list[Annotated[str, Field(max_length=500)]], Field(max_length=100)] = Field(default_factory=list)
    # Reach the steps as environment variables; masked in logs, never shown by the API.
    secrets: Annotated[dict[str, Annotated[Text, Field(min_length=1, max_length=32_768)] | SecretRef], Field(max_length=64)] = Field(
        default_factory=dict
    )
    callback_url: Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s/?#]+(/[^\s]*)?$"), AfterValidator(_no_nul)] | None = None
    caches: Annotated[list[CacheSpec], Field(max_length=10)] = Field(default_factory=list)
    # In a run: the job's name (unique in the run), and the names of the run's jobs that must
    # succeed before it starts (GitLab's `needs`, Buildkite's `depends_on`); when one of them
    # does not succeed, the job is cancelled with `needs_failed`. A job submitted alone has
    # no needs.
    name: Annotated[str, Field(pattern=_NAME.pattern, description="the job's name in its run (unique there)")] | None = None
    needs: Annotated[list[Annotated[str, Field(pattern=_NAME.pattern)]], Field(max_length=100, description=(
        "names of jobs of the same run that must succeed before this one starts"))] = Field(default_factory=list)  # fmt: skip
    # Job identity (farm/identity.py), as GitHub's `permissions: id-token: write`: only a job
    # that asks gets FARM_ID_TOKEN_REQUEST_URL and _TOKEN, to fetch a signed OIDC token with.
    id_token: Annotated[bool, Field(description="the steps may ask farm for an OIDC ID token of this attempt")] = False
    # A CI system's tags, as a run's: `branch` is what notifications follow (farm.notify).
    labels: Annotated[dict[Annotated[str, Field(pattern=_NAME.pattern)], Annotated[Name, Field(max_length=200)]], Field(max_length=32)] = (
        Field(default_factory=dict)
    )

    @field_validator("needs")
    @classmethod
    def _needs_once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("needs names a job twice")
        return v

    @field_validator("artifacts")
    @classmethod
    def _artifact_patterns(cls, v: list[str]) -> list[str]:
        return [_artifact_pattern(p) for p in v]

    @field_validator("env", "secrets")
    @classmethod
    def _env_names(cls, v: dict[str, object]) -> dict[str, object]:
        _check_env_names(list(v))
        return v

    @field_validator("steps")
    @classmethod
    def _build_jobs_have_steps(cls, v: list[Step], info: ValidationInfo) -> list[Step]:
        if info.data.get("kind", "build") == "build" and not v:
            raise ValueError("a build job needs at least one step")
        return v

    @field_validator("build")
    @classmethod
    def _image_jobs_have_a_build(cls, v: ImageBuild | None, info: ValidationInfo) -> ImageBuild | None:
        kind = info.data.get("kind", "build")
        if kind == "image" and v is None:
            raise ValueError("an image job needs `build`")
        if kind == "build" and v is not None:
            raise ValueError("`build` is for kind: image")
        return v

    def redacted(self) -> "JobSpec":
        """The spec as shown to anyone: literal secret values replaced, references kept."""
        if not self.secrets:
            return self
        shown = {k: v if isinstance(v, SecretRef) else REDACTED for k, v in self.secrets.items()}
        return self.model_copy(update={"secrets": shown})


def unsupported(spec: JobSpec, runtime: str) -> list[tuple[tuple[str | int, ...], str]]:
    """What of `spec` a runtime would silently not honour, as (field path, why): the API
    refuses it (422) where it knows the runtime, an executor warns in the log and the result."""
    if runtime != "local":
        return []
    found: list[tuple[tuple[str | int, ...], str]] = []
    if spec.kind == "image":
        found.append((("kind",), "image jobs need the docker, dind or sandbox runtime; this farm runs steps on the host (local)"))
    for i, step in enumerate(spec.steps):
        if step.image:
            found.append((("steps", i, "image"), f"the local runtime runs steps on the host, not in {step.image!r}; "
                                                 "images need the docker, dind or sandbox runtime"))  # fmt: skip
    return found


class StepResult(_Strict):
    name: str
    exit_code: int | None
    duration_s: float
    started_at: Timestamp | None = None  # by the executor's clock; the log marks the step with `--- step NAME` lines


class ArtifactInfo(_Strict):
    name: str
    size: int
    sha256: str


class Job(BaseModel):
    """A job as stored and shown: the spec plus everything farm learned running it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    state: JobState
    attempt: Annotated[int, Field(ge=1)]
    spec: JobSpec
    queued_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    executor: str | None = None
    exit_code: int | None = None
    error: ErrorCode | None = None
    steps: list[StepResult] = Field(default_factory=list)
    artifacts: list[ArtifactInfo] = Field(default_factory=list)
    caches: list[CacheResult] = Field(default_factory=list)
    image: ImageResult | None = None
    log_truncated: bool = False  # over its cap: the log keeps each attempt's head and tail
    warnings: list[str] = Field(default_factory=list)  # what farm could not honour (a field the runtime ignores...)
    webhook: Literal["pending", "delivered", "failed"] | None = None
    rerun_of: str | None = None
    run_id: str | None = None  # the run it was submitted in (POST /v1/runs)

    @property
    def pool(self) -> str:
        return self.spec.pool

    @field_serializer("spec")
    def _shown(self, spec: JobSpec) -> JobSpec:
        """A job leaves farm (an API answer, a webhook, `--json`) with its literal secret
        values redacted, whichever path made it: the redaction is the serialisation's."""
        return spec.redacted()


# -- runs: a CI pipeline's jobs, submitted, followed and cancelled as one ---------------------

RUN_JOBS_MAX = 1000  # a run's jobs, whatever the setting says (the request body caps it too)


class Supersede(_Strict):
    """A newer run of the tenant in `group` (a branch, a pull request) cancels the older
    ones': their queued jobs at once, their running ones killed as a cancel does."""

    group: Annotated[str, Field(pattern=_NAME.pattern)]


class RunSpec(_Strict):
    """A run: jobs created together (all or none), followed and cancelled together."""

    name: Annotated[Name, Field(min_length=1, max_length=200)]
    jobs: Annotated[list[JobSpec], Field(min_length=1, max_length=RUN_JOBS_MAX)]
    labels: Annotated[dict[Annotated[str, Field(pattern=_NAME.pattern)], Annotated[Name, Field(max_length=200)]], Field(max_length=32)] = (
        Field(default_factory=dict)
    )
    supersede: Supersede | None = None
    # Called once when the run ends (every job ended), signed as job webhooks are.
    callback_url: Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s/?#]+(/[^\s]*)?$"), AfterValidator(_no_nul)] | None = None

    @model_validator(mode="after")
    def _a_graph(self) -> "RunSpec":
        """Names unique, needs naming jobs of the run, and no cycle: each a 422 naming the job."""
        named: dict[str, int] = {}
        for i, job in enumerate(self.jobs):
            if job.name is not None:
                if job.name in named:
                    raise ValueError(f"jobs[{i}]: the name {job.name!r} is taken by jobs[{named[job.name]}]")
                named[job.name] = i
        for i, job in enumerate(self.jobs):
            for need in job.needs:
                if need not in named:
                    raise ValueError(f"jobs[{i}]: needs {need!r}, which no job of the run is named")
                if named[need] == i:
                    raise ValueError(f"jobs[{i}]: needs itself")
        order = run_order([(job.name, job.needs) for job in self.jobs])
        if len(order) < len(self.jobs):
            stuck = min(set(range(len(self.jobs))) - set(order))
            raise ValueError(f"jobs[{stuck}] ({self.jobs[stuck].name}): its needs form a cycle")
        return self


def run_order(jobs: list[tuple[str | None, list[str]]]) -> list[int]:
    """The indexes of a run's jobs, given as (name, needs), in an order where each comes
    after what it needs (Kahn's, stable: among jobs ready together, the one submitted first);
    shorter than `jobs` when their needs form a cycle (the jobs on or behind it are left out)."""
    named = {name: i for i, (name, _) in enumerate(jobs) if name is not None}
    waiting = [len(needs) for _, needs in jobs]
    after: dict[int, list[int]] = {}
    for i, (_, needs) in enumerate(jobs):
        for need in needs:
            if need in named:
                after.setdefault(named[need], []).append(i)
            else:
                waiting[i] = -1  # an unknown name: never ready
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in after.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    return order


class RunState(StrEnum):
    """A run's state, from its jobs' (counted on the run as they start and end: store/runs.py,
    and lib.lua `run_job_ended` for the outcome)."""

    QUEUED = "queued"  # no job started yet
    RUNNING = "running"  # a job started, and not every job ended
    SUCCEEDED = "succeeded"  # every job succeeded
    FAILED = "failed"  # every job ended, one did not succeed (failed, timed out, expired)
    CANCELLED = "cancelled"  # every job ended, one was cancelled (or superseded), none failed


class RunJob(BaseModel):
    """A job of a run as its graph shows it: `waiting_on` the needs that have not succeeded yet."""

    id: str
    name: str | None = None
    needs: list[str] = Field(default_factory=list)
    state: JobState | None = None  # None: purged by retention
    error: ErrorCode | None = None
    waiting_on: list[str] = Field(default_factory=list)


class Run(BaseModel):
    """A run as shown: what was asked, and its jobs' states summed up."""

    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    supersede: Supersede | None = None
    state: RunState
    counts: dict[JobState, int]  # jobs by state
    jobs: list[str]  # the jobs' ids, in the order submitted
    created_at: Timestamp
    started_at: Timestamp | None = None  # the first job's start
    finished_at: Timestamp | None = None  # the last job's end, once every job ended
    superseded_by: str | None = None  # the newer run that cancelled it
    callback_url: str | None = None
    webhook: Literal["pending", "delivered", "failed"] | None = None
    graph: list[RunJob] | None = Field(default=None, description=(
        "each job's name, needs and state, in the order submitted (a single run's read; not in lists)"))  # fmt: skip


def rfc3339(ms: int | None) -> str | None:
    """Milliseconds since the epoch -> '2026-11-26T06:03:11.123Z'."""
    if ms is None:
        return None
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_rfc3339(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
