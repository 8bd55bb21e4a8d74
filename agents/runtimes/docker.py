"""The `docker` runtime (DooD): each step in a container on the host's Docker daemon.

What DooD exposes: farm itself holds the host daemon's socket, which is root on that host.
Steps never get the socket: each runs in a container of the step's `image` with only the
job's workspace mounted at /workspace, `no-new-privileges`, every capability dropped, no
network unless the job asks for the host's, CPU, memory and process limits, optionally a
read-only root filesystem, and never as root by default: as farm's own uid:gid, or, when
farm itself runs as root, as an unprivileged uid:gid (`docker.user`, default 65532:65532)
to whom the attempt hands its workspace. The container is removed afterwards, whatever
happened, and labelled with its attempt so the node's warden finds it if the executor dies.
Images are never pulled: they must already be on the daemon (there is no registry here).

Image jobs build on the same daemon (`build_image`): the build context is the job's
workspace (its checked-out source), RUN steps get no network unless the job asks for the
host's, and the result is tagged and, if asked, pushed to `images.registry`.

Layer cache, per tenant and tier (`LayerScope`): the classic builder would take any image
on the daemon with the same parent and instruction as a cache hit, so one tenant's RUN
layer would be another's (layer poisoning), and a pull request's (unprotected) layer a
release build's. A build therefore always passes `cache_from`: the images earlier builds of
the same tenant and trust tier produced, which the builder then takes as its only cache
candidates (a layer counts when it is in one of those images' parent chains); with none
yet, a name that does not exist, which means no cache at all (seen on Docker 20.10's
classic builder: tests/integration/test_tenant_layers.py). After a build, its image and
the last image of each earlier stage (a multi-stage build's stages are not in the final
image's chain) are tagged `farm-cache/<tier>-<digest of tenant and tier>:<ms>-<id>` on
the daemon, newest first, at most CACHE_REFS per scope; older tags are removed (and their
images, when nothing else holds them). These tags are local: nothing pushed carries them.
What remains shared on the host daemon: a build can read (FROM, COPY --from) any image on
it; builds that must not see each other at all need a private daemon per executor (DinD).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.utils import parse_bytes

from agents.runtimes.base import StepContext
from agents.runtimes.errors import DOCKER_ERRORS, docker_errors
from agents.runtimes.follower import OutputFollower
from farm.errors import RuntimeFailure
from farm.models import ImageBuild, ImageResult, Step
from farm.settings import DockerSettings

log = logging.getLogger("farm.docker")

WORKDIR = "/workspace"


def from_images(dockerfile: str, build_args: dict[str, str]) -> list[str]:
    """The images a Dockerfile's FROM lines name, in order: not earlier stages, not
    `scratch`, with ARGs declared before the first FROM substituted (their defaults or
    build_args); a name still holding a `$` is left out (the build will say what is wrong)."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    text = re.sub(r"\\\n", " ", dockerfile)  # line continuations
    for raw in text.splitlines():
        words = raw.strip().split()
        if not words or words[0].startswith("#"):
            continue
        op = words[0].upper()
        if op == "ARG" and not seen_from and len(words) > 1:
            name, _, default = words[1].partition("=")
            args[name] = build_args.get(name, default.strip('"'))
        elif op == "FROM":
            seen_from = True
            rest = [w for w in words[1:] if not w.startswith("--")]
            if not rest:
                continue
            name = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest[0])
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2].lower())
            if name.lower() in stages or name == "scratch" or "$" in name or name in images:
                continue
            images.append(name)
    return images


def _hang_up(response: object) -> None:
    """Close a streaming response's socket under the thread reading it: a plain close()
    waits for that read to return, which a quiet build may not do for minutes."""
    conn = getattr(getattr(response, "raw", None), "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_RUNNING_IN = re.compile(r"---> Running in ([0-9a-f]{12,64})")  # the classic builder's RUN container
_STEP_DONE = re.compile(r"^ ---> ([0-9a-f]{12,64})$", re.M)  # the image a step of the classic builder made (or found)
_STEP_FROM = re.compile(r"^Step \d+/\d+ : FROM ", re.M | re.I)  # a stage begins
UNPRIVILEGED = (65532, 65532)  # "nonroot", as distroless images name it


def step_user(setting: str) -> tuple[str | None, tuple[int, int] | None]:
    """(the container's --user, the owner its workspace must be given to) for `docker.user`.

    "auto": farm's own uid:gid, which owns the workspace already; but never root: farm
    running as root runs steps as UNPRIVILEGED and hands it the workspace. A numeric
    "uid:gid" other than farm's own is handed the workspace too; a name is passed through
    (the image must know it, and its files must be writable to it)."""
    me = (os.getuid(), os.getgid())
    if setting == "auto":
        owner = UNPRIVILEGED if me[0] == 0 else me
        return f"{owner[0]}:{owner[1]}", (owner if owner != me else None)
    uid, _, gid = setting.partition(":")
    if uid.isdigit() and (gid.isdigit() or not gid):
        owner = (int(uid), int(gid or uid))
        return setting, (owner if owner != me and me[0] == 0 else None)
    return setting or None, None


def _split(ref: str) -> tuple[str, str]:
    """"host:5000/team/app:1.2" -> ("host:5000/team/app", "1.2"); no tag -> "latest"."""
    head, _, last = ref.rpartition("/")
    if ":" in last:
        name, tag = last.rsplit(":", 1)
        return (f"{head}/{name}" if head else name), tag
    return ref, "latest"


CACHE_REPO = "farm-cache"
CACHE_REFS = 64  # cache tags kept per scope: the builder's candidates, newest first


@dataclass(frozen=True)
class LayerScope:
    """Whose layers may be a build's cache: one tenant's, of one trust tier."""

    tenant: str
    tier: str

    @classmethod
    def of(cls, ctx: StepContext) -> LayerScope:
        return cls(ctx.tenant, ctx.tier)

    @property
    def cache_repo(self) -> str:
        """The scope's tags on a daemon: a digest, as tenant names need not be valid
        repository names; the tier in plain words for an operator reading `docker images`."""
        digest = hashlib.sha256(f"{self.tenant}\0{self.tier}".encode()).hexdigest()[:20]
        tier = re.sub(r"[^a-z0-9]+", "-", self.tier.lower()).strip("-") or "tier"
        return f"{CACHE_REPO}/{tier}-{digest}"

    def __str__(self) -> str:
        return f"{self.tenant} ({self.tier})"


class StageEnds:
    """Reads the classic builder's output for the images worth keeping as cache: the last
    image of each stage, once it made one of its own (a stage that is only its FROM holds
    nobody's layers)."""

    def __init__(self) -> None:
        self.ends: list[str] = []
        self._from: str | None = None  # the current stage's base image
        self._last: str | None = None  # the current stage's last image
        self._at_from = False

    def feed(self, text: str) -> None:
        for line in text.splitlines():
            if _STEP_FROM.match(line):
                self._close()
                self._at_from = True
            elif done := _STEP_DONE.match(line):
                if self._at_from:
                    self._from, self._at_from = done.group(1), False
                self._last = done.group(1)

    def _close(self) -> None:
        """A stage ended (the next FROM): its last image is kept; the last stage's is the
        build's own image, which the caller has."""
        if self._last is not None and self._last != self._from and self._last not in self.ends:
            self.ends.append(self._last)
        self._from = self._last = None


class DockerRuntime:
    name = "docker"
    uses_workspace = True
    sees_new_mounts = True

    def __init__(self, settings: DockerSettings) -> None:
        self.settings = settings
        self._client: docker.DockerClient | None = None
        self.user, self.step_owner = step_user(settings.user)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with docker_errors("docker daemon unreachable"):
                self._client = docker.from_env(timeout=60)
        return self._client

    def prepare(self) -> None:
        with docker_errors("docker daemon unreachable"):
            self.client.ping()

    # Hooks for the dind runtime, which runs the same steps against a private daemon.
    def _ensure_image(self, image: str) -> None:
        """Make `image` available to the daemon; the host daemon has what it has."""

    def _has_image(self, image: str) -> bool:
        with docker_errors("docker"):
            try:
                self.client.api.inspect_image(image)
            except docker.errors.ImageNotFound:  # the answer, not a failure
                return False
        return True

    def _step_mounts(self) -> dict[str, dict[str, str]]:
        return {}

    def _step_env(self) -> dict[str, str]:
        return {}

    def run_step(self, step: Step, ctx: StepContext) -> int:
        image = step.image or self.settings.default_image
        self._ensure_image(image)
        # Created under the attempt's guard and labelled with it: the node's warden finds a
        # dead executor's containers by these labels, and a fenced attempt creates none.
        with ctx.unit.guard() if ctx.unit is not None else nullcontext():
            container = self._create(image, step, ctx)
        try:
            with docker_errors("docker failed while running the step"):
                return self._run(container, ctx)
        finally:
            self._remove_quietly(container.id)  # its anonymous volumes (an image's VOLUME) too

    def labels(self, ctx: StepContext) -> dict[str, str]:
        labels = {"farm.job": ctx.job_id, "farm.attempt": str(ctx.attempt)}
        if ctx.unit is not None:
            labels["farm.instance"] = ctx.unit.containment.instance
        return labels

    def _options(self, step: Step, ctx: StepContext) -> dict[str, object]:
        """How a step's container is made (the sandbox runtime adds to it)."""
        tmpfs = {"/tmp": "rw,nosuid,nodev,size=256m"} if self.settings.read_only_rootfs else None
        return dict(
            entrypoint=["/bin/sh", "-c"],  # a step is a shell script, whatever the image's entrypoint
            command=[step.run],
            working_dir=WORKDIR,
            volumes={str(ctx.workspace): {"bind": WORKDIR, "mode": "rw"}, **self._step_mounts()},
            environment={"HOME": WORKDIR, **self._step_env(), **ctx.env},
            network_mode="host" if ctx.network == "host" else "none",
            nano_cpus=int(self.settings.cpus * 1e9) if self.settings.cpus else None,
            mem_limit=self.settings.memory,
            security_opt=["no-new-privileges"],
            cap_drop=["ALL"],
            user=self.user,
            pids_limit=self.settings.pids_limit,
            read_only=self.settings.read_only_rootfs,
            tmpfs=tmpfs,
            labels=self.labels(ctx),
            detach=True,
        )

    def _create(self, image: str, step: Step, ctx: StepContext):  # type: ignore[no-untyped-def]
        missing = f"image {image!r} is not on the docker daemon (farm does not pull images)"
        with docker_errors(f"cannot create a container of {image!r}", missing=missing):
            return self.client.containers.create(image, **self._options(step, ctx))

    WAIT_RETRY_S = 60.0  # how long the daemon may keep failing to say whether a step ended
    WAIT_HELD_S = 1.0  # a wait that held this long was answered: its failure starts a new row

    def _run(self, container, ctx: StepContext) -> int:  # type: ignore[no-untyped-def]
        container.start()
        result: dict[str, int] = {}
        failed: list[BaseException] = []
        follower = OutputFollower(container, ctx.output, ctx.stop)  # follows again after a break

        def wait() -> None:
            try:
                result["code"] = self._exit_code(container, ctx.stop)
            except BaseException as e:  # noqa: BLE001 - raised on the step's thread below
                failed.append(e)

        reader = threading.Thread(target=follower.run, name="container-output", daemon=True)
        waiter = threading.Thread(target=wait, name="container-wait", daemon=True)
        reader.start()
        waiter.start()
        while waiter.is_alive():
            if ctx.stop.wait(0.02):
                self._kill(container)
                waiter.join(10)
                break
        reader.join(2.0)
        try:
            if failed and not ctx.stop.is_set():
                raise failed[0]
            if not ctx.stop.is_set():
                follower.finish()
        finally:
            follower.close()
        return result.get("code", -9)

    def _exit_code(self, container, stop: threading.Event) -> int:  # type: ignore[no-untyped-def]
        """The step's exit code, when its container exits. A transport error or a 5xx (the
        daemon restarting or overloaded a moment) is not the step's end: the container runs
        on, so it is asked again, backing off, until the daemon has failed for WAIT_RETRY_S in
        a row (then raised: a runtime failure, not an exit code) or the step is being
        stopped. A wait that held for WAIT_HELD_S was answered: its break starts a new row."""
        pause, failing_since = 0.2, None
        while True:
            asked = time.monotonic()
            try:
                return container.wait()["StatusCode"]
            except DOCKER_ERRORS as e:
                if isinstance(e, docker.errors.DockerException) and not (
                    isinstance(e, docker.errors.APIError) and e.is_server_error()
                ):
                    raise  # the daemon answered (no such container...): nothing to wait for
                now = time.monotonic()
                if failing_since is None or now - asked >= self.WAIT_HELD_S:
                    failing_since, pause = now, 0.2
                if now - failing_since >= self.WAIT_RETRY_S:
                    raise
                log.warning("container %s: waiting for its exit failed (%s: %s); asking again", container.id[:12], type(e).__name__, e)
                if stop.wait(pause):
                    raise
                pause = min(pause * 2, 5.0)

    @staticmethod
    def _kill(container) -> None:  # type: ignore[no-untyped-def]
        """Kill a step's container being stopped (cancel, timeout, lost lease): never a
        failure of the job. An error answer means it exited or is gone already, which is what
        the kill was for; a transport error (the daemon away a moment) is tried once more,
        then left to the step's removal (forced) and the node's warden, which find the
        container by its labels."""
        for attempt in (1, 2):
            try:
                container.kill()
                return
            except docker.errors.APIError as e:
                log.info("container %s: kill answered %s; taken as stopped", container.id[:12], e)
                return
            except DOCKER_ERRORS as e:
                log.warning("container %s: kill failed (%s: %s); %s", container.id[:12], type(e).__name__, e,
                            "trying again" if attempt == 1 else "left to its removal")  # fmt: skip

    def _build_api(self) -> docker.APIClient:
        """A client of its own for one build: closing its response is how a build is stopped."""
        return docker.from_env(timeout=None).api

    def _run_build(self, build: ImageBuild, context: Path, ctx: StepContext, cache_from: list[str] | None = None,
                   stages: StageEnds | None = None) -> str:  # fmt: skip
        """Run the build, its output into the job log; the image id. Stopped (cancel,
        timeout, lost lease) within a moment however quiet the build is: the build's HTTP
        response is closed, and the daemon cancels a build whose client went away (its
        containers go with it, forcerm). The build's containers get the steps' memory cap.
        `cache_from`: the only images whose layers may be cache hits (None: any on the
        daemon); `stages` reads the output for the stages' last images."""
        api = self._build_api()
        got: dict[str, object] = {}
        api.hooks["response"].append(lambda r, *args, **kw: got.setdefault("response", r))
        limits = {"memory": parse_bytes(self.settings.memory), "memswap": -1} if self.settings.memory else None

        def consume() -> None:
            try:
                for event in api.build(
                    path=str(context), dockerfile=build.dockerfile, tag=build.tags[0], buildargs=build.build_args or None,
                    target=build.target, network_mode=build.network, rm=True, forcerm=True, pull=False, decode=True,
                    container_limits=limits, cache_from=cache_from,
                ):  # fmt: skip
                    if "stream" in event:
                        ctx.output(event["stream"].encode())
                        if stages is not None:
                            stages.feed(event["stream"])
                        if running := _RUNNING_IN.search(event["stream"]):
                            got["container"] = running.group(1)
                            if ctx.unit is not None:
                                ctx.unit.adopt(running.group(1))  # the node's warden removes it if we die
                    if "error" in event:
                        got["error"] = event["error"].strip()
                    if "aux" in event and "ID" in event["aux"]:
                        got["id"] = event["aux"]["ID"]
            except Exception as e:  # noqa: BLE001 - reported below, or the stop that closed it
                got.setdefault("failure", e)

        reader = threading.Thread(target=consume, name="image-build", daemon=True)
        reader.start()
        try:
            while reader.is_alive():
                if ctx.stop.wait(0.05):
                    _hang_up(got.get("response"))
                    reader.join(10)
                    # The daemon cancels the build, but not always the container of a RUN it
                    # was just starting: remove that one ourselves.
                    if "container" in got:
                        self._remove_quietly(str(got["container"]))
                    raise RuntimeFailure("build stopped")
        finally:
            api.close()
        if "error" in got:
            raise RuntimeFailure(f"build failed: {got['error']}")
        if "failure" in got:
            raise RuntimeFailure(f"docker: {got['failure']}")
        if "id" not in got:
            raise RuntimeFailure("build finished without an image")
        return str(got["id"])

    def _remove_quietly(self, container: str) -> None:
        """Best effort, never a failure of the step: a container gone already is what we
        wanted, and one that stays is labelled for end_job and the node's warden."""
        try:
            self.client.api.remove_container(container, force=True, v=True)
        except DOCKER_ERRORS:
            pass

    def build_image(self, build: ImageBuild, workspace: Path, ctx: StepContext, registry: str | None) -> ImageResult:
        """Build on the host daemon (DooD) from the workspace, tag, and push if asked. The
        build's output streams into the job log; a stop request abandons the build."""
        api = self.client.api
        context = workspace / build.context
        if not (context / build.dockerfile).is_file():
            raise RuntimeFailure(f"no {build.dockerfile} in {build.context}")
        for base in from_images((context / build.dockerfile).read_text(errors="replace"), build.build_args):
            self._ensure_image(base)
            # The daemon would pull a missing base from its public registry: only ours is used.
            if not self._has_image(base) and not (registry and base.startswith(f"{registry}/")):
                raise RuntimeFailure(f"base image {base!r} is not on the docker daemon, and farm pulls base images "
                                     f"only from images.registry ({registry or 'none is set'})")  # fmt: skip
        scope = self._cache_scope(ctx)
        stages = StageEnds()
        with docker_errors("docker"):
            cache_from = self._cache_from(scope) if scope is not None else None
            image_id = self._run_build(build, context, ctx, cache_from, stages)
            if scope is not None:
                self._keep_cache(scope, [*stages.ends, image_id])
            for tag in build.tags[1:]:
                api.tag(image_id, *_split(tag))
            pushed, digest = [], None
            if build.push:
                if not registry:
                    raise RuntimeFailure("push asked, but no registry is configured (images.registry)")
                for tag in build.tags:
                    repo, name = _split(f"{registry}/{tag}")
                    api.tag(image_id, repo, name)
                    digest = self._push(repo, name, ctx)
                    pushed.append(f"{repo}:{name}@{digest}")
        return ImageResult(id=image_id, tags=build.tags, pushed=pushed, digest=digest)

    # -- the layer cache of a tenant and tier ---------------------------------------------

    def _cache_scope(self, ctx: StepContext) -> LayerScope | None:
        """Whose layers this build may use as cache; None: any on the daemon (a private
        daemon whose whole store is one scope's, as DinD's)."""
        return LayerScope.of(ctx)

    def _cache_tags(self, scope: LayerScope) -> list[tuple[str, str]]:
        """(tag, image id) of the scope's cache tags, newest first."""
        repo = scope.cache_repo
        found = [(ref.rpartition(":")[2], image["Id"]) for image in self.client.api.images(name=repo)
                 for ref in image.get("RepoTags") or [] if ref.startswith(f"{repo}:")]  # fmt: skip
        return sorted(found, reverse=True)

    def _cache_from(self, scope: LayerScope) -> list[str]:
        """The builder's cache candidates for `scope`, never an empty list: with none, the
        classic builder would take every image on the daemon; a name that does not exist
        takes none (the daemon logs that it skipped it)."""
        refs = [f"{scope.cache_repo}:{tag}" for tag, _ in self._cache_tags(scope)[:CACHE_REFS]]
        return refs or [f"{scope.cache_repo}:none"]

    def _keep_cache(self, scope: LayerScope, images: list[str]) -> None:
        """Tag what this build made as the scope's cache, newest first; drop older tags of
        the same images and those past CACHE_REFS. A failure here costs the next build its
        cache, never this build its result."""
        api, repo = self.client.api, scope.cache_repo
        stamp = f"{time.time_ns() // 1_000_000:013d}"
        try:
            fresh: dict[str, str] = {}  # by short id, as the builder's output names images
            for image in images:
                short = image.removeprefix("sha256:")[:12]
                fresh[short] = tag = f"{stamp}-{short}"
                api.tag(image, repo, tag)
            kept = 0
            for tag, image_id in self._cache_tags(scope):
                if fresh.get(image_id.removeprefix("sha256:")[:12], tag) == tag and kept < CACHE_REFS:
                    kept += 1
                    continue
                try:
                    api.remove_image(f"{repo}:{tag}")  # an untag; the image goes too if nothing else holds it
                except docker.errors.APIError as e:  # gone meanwhile (a concurrent build of the scope), or in use
                    log.info("cache tag %s:%s stays: %s", repo, tag, e)
        except DOCKER_ERRORS as e:
            log.warning("the layer cache of %s was not updated: %s", scope, e)

    def _push(self, repo: str, tag: str, ctx: StepContext) -> str:
        digest = None
        for event in self.client.api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise RuntimeFailure(f"push of {repo}:{tag} failed: {event['error'].strip()}")
            if "aux" in event and "Digest" in event["aux"]:
                digest = event["aux"]["Digest"]
            elif event.get("status") in ("Pushed", "Layer already exists") or "digest" in event.get("status", ""):
                ctx.output(f"{event.get('id', '')} {event['status']}\n".lstrip().encode())
        if digest is None:
            raise RuntimeFailure(f"push of {repo}:{tag} reported no digest")
        ctx.output(f"pushed {repo}:{tag}@{digest}\n".encode())
        return digest

    def end_job(self, job_id: str) -> None:
        """Remove the job's step containers that outlived it (run_step removes each one; this
        catches a removal that failed)."""
        try:
            for container in self.client.containers.list(all=True, filters={"label": f"farm.job={job_id}"}):
                container.remove(force=True, v=True)
        except DOCKER_ERRORS:
            pass  # best effort after the job's end, not its failure: these are labelled for the warden and an operator

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
