"""What the sandbox's boundary costs a user: the runtimes side by side, in one run.

Each figure is taken through real executors claiming jobs from a real (embedded) Valkey,
as `farm up` runs them, one runtime after the other on the same machine:

- start_p50_s (local, docker, sandbox): submit to the step's first log line, on an idle
  executor; the median of --starts jobs.
- image_first_s (docker, dind, sandbox): the first image job on the node (its source, a git
  repository on this machine, checked out, then the build), by a tenant of its own: for sandbox this includes copying
  the base image from the host's daemon into the node's base store, once per node and image.
- image_cold_s (docker, dind, sandbox): then the same job for another tenant, whose layer
  store is empty: no layer of it cached anywhere the runtime may use for that tenant, the
  node holding the base image as docker's daemon does. Submit to the job's end, on an idle
  executor.
- image_rebuild_s (docker, dind, sandbox): the same job again, Dockerfile unchanged, on a
  fresh executor (a new runtime instance: for dind a new daemon, for sandbox a new
  builder) after the first one drained: every layer should be a cache hit.
- drain_jobs_per_s (local, docker, sandbox): --jobs one-step jobs (`true`) submitted at
  once and run by --executors executors; jobs over the seconds from the first submit to
  the last end.

The Dockerfile does real work on --base (default farm/debian:bookworm, made by
images/make-bases.sh debian): a layer of 40 MB of generated files, a Python computation,
a COPY from the context and a last RUN. Builds have no network (the default).

Needs root, Docker with runsc registered (images/register-runsc.sh), the build user
(images/add-build-user.sh), buildah, and the images images/build.sh makes (dind).

Usage: python bench/sandbox.py [--json] [--starts 20] [--jobs 200] [--executors 2]
                               [--base farm/debian:bookworm] [--runtimes local,docker,dind,sandbox]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker  # noqa: E402
from harness import progress, report  # noqa: E402

from agents.executor import Executor, build_executor  # noqa: E402
from farm.models import Job, JobSpec, JobState  # noqa: E402
from farm.settings import Settings  # noqa: E402
from farm.store.client import connect  # noqa: E402
from farm.store.executors import ExecutorState  # noqa: E402
from farm.store.jobs import JobStore  # noqa: E402
from farm.store.server import EmbeddedRedis  # noqa: E402

STEP_IMAGE = "farm/busybox:latest"
DOCKERFILE = """\
FROM {base}
RUN mkdir -p /opt/data && for i in $(seq 1 160); do head -c 262144 /dev/urandom > /opt/data/blob$i; done
RUN python3 -c "import hashlib; h = hashlib.sha256(); [h.update(str(i).encode() * 64) for i in range(400000)]; print(h.hexdigest())" > /opt/sum
COPY app.txt /opt/app.txt
RUN cat /opt/app.txt /opt/sum && ls /opt/data | wc -l
"""
STARTS = ("local", "docker", "sandbox")
IMAGES = ("docker", "dind", "sandbox")
DRAINS = ("local", "docker", "sandbox")


class Bench:
    def __init__(self, work: Path, redis_url: str, args: argparse.Namespace) -> None:
        self.work, self.redis_url, self.args = work, redis_url, args
        self.store = JobStore(connect(redis_url))

    def settings(self, runtime: str) -> Settings:
        return Settings.load(
            redis_url=self.redis_url, data_dir=self.work / runtime, pools=[runtime],
            executors={"runtime": runtime, "pool": runtime}, docker={"default_image": STEP_IMAGE},
            dind={"image": self.args.dind_image},
        )  # fmt: skip

    @contextmanager
    def executors(self, runtime: str, n: int) -> Iterator[list[Executor]]:
        """n executors of `runtime` on threads, each ready (idle) before this yields."""
        settings = self.settings(runtime)
        started: list[tuple[Executor, threading.Thread]] = []
        try:
            for _ in range(n):
                ex = build_executor(f"bench-{runtime}-{uuid.uuid4().hex[:6]}", settings)
                thread = threading.Thread(target=ex.run, daemon=True)
                thread.start()
                started.append((ex, thread))
            for ex, _ in started:
                until(lambda: ex.state is ExecutorState.IDLE or ex.error, 180, f"a {runtime} executor to start")  # noqa: B023
                if ex.error:
                    raise SystemExit(f"the {runtime} executor could not start: {ex.error}")
            yield [ex for ex, _ in started]
        finally:
            for ex, _ in started:
                ex.drain()
            for _, thread in started:
                thread.join(60)

    def submit(self, runtime: str, tenant: str = "bench", **spec: object) -> Job:
        return self.store.submit(JobSpec(pool=runtime, **spec), tenant).job  # type: ignore[arg-type]

    def wait(self, job: Job, timeout: float = 600) -> Job:
        done = until(lambda: (j := self.store.get(job.id)).state.terminal and j, timeout, f"job {job.id}")
        if done.state is not JobState.SUCCEEDED:  # type: ignore[union-attr]
            raise SystemExit(f"job {job.id} ended {done.state}:\n{self.log(job)[-3000:]}")  # type: ignore[union-attr]
        return done  # type: ignore[return-value]

    def log(self, job: Job) -> str:
        return "".join(c.data for c in self.store.read_log(job.id) if c.data)

    def start_p50(self, runtime: str) -> float:
        took = []
        with self.executors(runtime, 1) as (ex,):
            for i in range(self.args.starts):
                progress(f"{runtime}: start {i + 1}/{self.args.starts}")
                until(lambda: ex.state is ExecutorState.IDLE, 60, "the executor to be idle")  # noqa: B023
                t0 = time.monotonic()
                job = self.submit(runtime, steps=[{"name": "hello", "run": "echo first-line"}])
                until(lambda: "first-line" in self.log(job), 60, "the first log line", interval=0.002)  # noqa: B023
                took.append(time.monotonic() - t0)
                self.wait(job)
        return round(statistics.median(took), 3)

    @functools.cached_property
    def source(self) -> str:
        """A git repository on this machine holding the Dockerfile and its context: an image
        job's source, checked out as any job's (a file:// URL, which store.submit admits)."""
        repo = self.work / "source"
        repo.mkdir()
        (repo / "Dockerfile").write_text(DOCKERFILE.format(base=self.args.base))
        (repo / "app.txt").write_text("bench-app\n")
        git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "bench"]):
            subprocess.run([*git, *argv], check=True)
        return f"file://{repo}"

    def image_job(self, runtime: str, tenant: str) -> dict[str, object]:
        return {"kind": "image", "source": {"git": {"url": self.source, "ref": "main"}},
                "build": {"tags": [f"{tenant}/bench:1"]}, "timeout_s": 1800}  # fmt: skip

    def image(self, runtime: str) -> tuple[float, float, float]:
        first, tenant = (f"bench-{uuid.uuid4().hex[:8]}" for _ in range(2))  # tenants no store has seen
        times = []
        for what, who in (("first build on the node", first), ("cold build", tenant), ("rebuild on a fresh executor", tenant)):
            with self.executors(runtime, 1):
                progress(f"{runtime}: image {what}")
                t0 = time.monotonic()
                job = self.wait(self.submit(runtime, who, **self.image_job(runtime, who)), 1800)
                times.append(round(time.monotonic() - t0, 2))
                log = self.log(job)
                if what.startswith("rebuild") and log.count("Using cache") < 4:
                    raise SystemExit(f"{runtime}: the rebuild was not all cache hits:\n{log[-3000:]}")
                if not what.startswith("rebuild") and "Using cache" in log:
                    raise SystemExit(f"{runtime}: a cold build used another tenant's cache:\n{log[-3000:]}")
        return times[0], times[1], times[2]

    def drain(self, runtime: str) -> float:
        with self.executors(runtime, self.args.executors):
            progress(f"{runtime}: drain {self.args.jobs} jobs on {self.args.executors} executors")
            t0 = time.monotonic()
            jobs = [self.submit(runtime, steps=[{"name": "noop", "run": "true"}]) for _ in range(self.args.jobs)]
            for job in jobs:
                self.wait(job)
            return round(len(jobs) / (time.monotonic() - t0), 2)


def until(predicate, timeout: float, what: str, interval: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--base", default="farm/debian:bookworm")
    ap.add_argument("--dind-image", default="farm/executor-dind:dev")
    ap.add_argument("--runtimes", default="local,docker,dind,sandbox")
    args = ap.parse_args()
    runtimes = args.runtimes.split(",")
    client = docker.from_env()
    for image in (STEP_IMAGE, args.base, *([args.dind_image] if "dind" in runtimes else [])):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SystemExit(f"{image} is missing: run images/make-bases.sh and images/build.sh") from None
    work = Path(tempfile.mkdtemp(prefix="farm-bench-sandbox-"))
    server = EmbeddedRedis(work / "redis")
    server.start()
    figures: dict[str, dict[str, float]] = {"start_p50_s": {}, "image_first_s": {}, "image_cold_s": {}, "image_rebuild_s": {}, "drain_jobs_per_s": {}}
    try:
        bench = Bench(work, server.url, args)
        for runtime in runtimes:
            if runtime in STARTS:
                figures["start_p50_s"][runtime] = bench.start_p50(runtime)
            if runtime in IMAGES:
                (figures["image_first_s"][runtime], figures["image_cold_s"][runtime],
                 figures["image_rebuild_s"][runtime]) = bench.image(runtime)  # fmt: skip
            if runtime in DRAINS:
                figures["drain_jobs_per_s"][runtime] = bench.drain(runtime)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(figures, args.json)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
