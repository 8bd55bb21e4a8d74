"""Image builds: cold against a rebuild with the Dockerfile unchanged, on DooD (the host's
daemon) and on a fresh DinD executor (a private daemon that did not build it before).

The Dockerfile does real work: apt installs a compiler into one layer, pip installs pinned
packages from PyPI into another, then a small C program is compiled. Builds run with the
host network (RUN steps reach the package registries) through the runtimes' `build_image`,
the code an image job runs (queueing and checkout left out: they cost the same either way).

- dood_cold_s: a build on the host daemon with no layer reuse (`nocache`);
  dood_warm_s: the same build again (every layer a cache hit).
- dind_cold_s: a fresh DinD executor with an empty layer store: its base image copied in
  from the host's daemon, then the build;
  dind_warm_s: another fresh executor (new daemon, new container) after the first one
  drained: it leases the pool's layer store (agents/runtimes/dind.py) and builds;
  dind_start_s: a DinD daemon's start (container up, API answering), warm store.
- dind_registry_warm_s: the road not taken, `--cache-from` the registry: a fresh daemon
  with an empty store copies the base in, pulls the last pushed image from a registry on
  127.0.0.1 and builds with it as the cache source.

Every warm figure is the median of --repeat runs (each on a new executor for DinD); cold
figures are single runs unless --repeat-cold. Needs Docker, root, the images
images/build.sh makes, Debian's docker-registry, and the package registries.

Usage: python bench/images.py [--json] [--repeat 3] [--repeat-cold 1] [--driver overlay2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker  # noqa: E402
from harness import progress, report, wait_until_answers  # noqa: E402

from agents.runtimes.base import StepContext  # noqa: E402
from agents.runtimes.dind import DindRuntime  # noqa: E402
from agents.runtimes.docker import DockerRuntime  # noqa: E402
from farm.models import ImageBuild  # noqa: E402
from farm.settings import Settings  # noqa: E402
from farm.store.server import free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BASE = "farm/debian:bookworm"
DOCKERFILE = f"""\
FROM {BASE}
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev make \\
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \\
    requests==2.32.3 numpy==2.2.1 pydantic==2.10.4 rich==13.9.4 PyYAML==6.0.2
COPY app.c /src/app.c
RUN gcc -O2 -o /usr/local/bin/app /src/app.c && /usr/local/bin/app
"""
APP_C = '#include <stdio.h>\nint main(void) { puts("app built"); return 0; }\n'
TAG = "farm-bench/images:1"


def context(work: Path) -> Path:
    ctx = work / "ws" / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app.c").write_text(APP_C)
    return ctx


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return round(time.monotonic() - t0, 2)


def build(runtime: DockerRuntime, ctx: Path, registry: str | None = None, push: bool = False) -> str:
    out = bytearray()
    sc = StepContext("bench", ctx, {}, out.extend, threading.Event(), "host")
    result = runtime.build_image(ImageBuild(tags=[TAG], network="host", push=push), ctx, sc, registry)
    if b"app built" not in out and b"Using cache" not in out:
        raise SystemExit(f"the build did not run its steps:\n{out.decode(errors='replace')[-2000:]}")
    return result.id


class Registry:
    """Debian's docker-registry on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise SystemExit("Debian's docker-registry is needed (apt-get install docker-registry)")
        self.host = f"127.0.0.1:{free_port()}"
        (root / "config.yml").write_text(
            f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
            f"http: {{addr: {self.host}}}\n"
        )
        self.proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_answers(f"http://{self.host}/v2/", 30, "the registry")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def dood(work: Path, args: argparse.Namespace) -> dict[str, float]:
    runtime = DockerRuntime(Settings.load(data_dir=work / "data").docker)
    ctx = context(work)
    api = runtime.client.api
    colds = []

    def cold() -> None:
        for event in api.build(path=str(ctx), tag=TAG, network_mode="host", nocache=True, rm=True, forcerm=True, decode=True):
            if "error" in event:
                raise SystemExit(event["error"])

    for i in range(args.repeat_cold):
        progress(f"DooD cold build {i + 1}/{args.repeat_cold}")
        colds.append(timed(cold))
    # The cold build above bypasses farm, so its layers are no tenant's cache: one build
    # through farm first makes them this (bench) tenant's (agents/runtimes/docker.py, cache_from).
    progress("DooD build through farm, seeding the tenant's layer cache (not timed)")
    build(runtime, ctx)
    warms = []
    for i in range(args.repeat):
        progress(f"DooD rebuild {i + 1}/{args.repeat}")
        warms.append(timed(lambda: build(runtime, ctx)))
    runtime.close()
    return {"dood_cold_s": statistics.median(colds), "dood_warm_s": statistics.median(warms)}


def dind(work: Path, args: argparse.Namespace, registry: Registry) -> dict[str, float]:
    ctx = context(work)

    def settings(store: Path) -> Settings:
        return Settings.load(data_dir=work / "data", executors={"runtime": "dind"},
                             dind={"store_dir": store, "storage_driver": args.driver, "image": args.dind_image})  # fmt: skip

    colds, warms, starts, via_registry = [], [], [], []
    for i in range(args.repeat_cold):
        progress(f"DinD cold build on a fresh executor with an empty layer store {i + 1}/{args.repeat_cold}")
        store = Path(tempfile.mkdtemp(prefix="store-", dir=work))
        first = DindRuntime(settings(store), f"bench-cold-{i}")
        first.prepare()
        colds.append(timed(lambda: build(first, ctx)))  # noqa: B023
        build(first, ctx, registry.host, push=True)  # for the --cache-from comparison; not timed
        first.close()
        for j in range(args.repeat):
            progress(f"DinD rebuild on a new executor {j + 1}/{args.repeat}")
            fresh = DindRuntime(settings(store), f"bench-warm-{i}-{j}")
            starts.append(timed(fresh.prepare))
            warms.append(timed(lambda: build(fresh, ctx)))  # noqa: B023
            fresh.close()
        shutil.rmtree(store, ignore_errors=True)
    for j in range(args.repeat):
        progress(f"DinD rebuild with --cache-from the registry, empty store {j + 1}/{args.repeat}")
        store = Path(tempfile.mkdtemp(prefix="store-", dir=work))
        fresh = DindRuntime(settings(store), f"bench-registry-{j}")
        fresh.prepare()
        ref = f"{registry.host}/{TAG}"

        def pull_then_build() -> None:
            fresh._ensure_image(BASE)  # noqa: B023 - the base, as the image job does
            fresh.client.api.pull(ref)  # noqa: B023
            for event in fresh.client.api.build(path=str(ctx), tag=TAG, network_mode="host", cache_from=[ref], decode=True):  # noqa: B023
                if "error" in event:
                    raise SystemExit(event["error"])
                if "Running in" in event.get("stream", ""):
                    raise SystemExit("--cache-from missed a layer: the comparison would be unfair")

        via_registry.append(timed(pull_then_build))
        fresh.close()
        shutil.rmtree(store, ignore_errors=True)
    return {
        "dind_cold_s": statistics.median(colds),
        "dind_warm_s": statistics.median(warms),
        "dind_start_s": statistics.median(starts),
        "dind_registry_warm_s": statistics.median(via_registry),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="warm runs (each DinD one on a new executor)")
    ap.add_argument("--repeat-cold", type=int, default=1)
    ap.add_argument("--driver", default="overlay2", choices=["overlay2", "fuse-overlayfs", "vfs"], help="the DinD daemons' storage driver")
    ap.add_argument("--dind-image", default="farm/executor-dind:dev")
    args = ap.parse_args()
    client = docker.from_env()
    for image in (BASE, args.dind_image):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SystemExit(f"{image} is missing: run images/build.sh") from None
    work = Path(tempfile.mkdtemp(prefix="farm-bench-images-"))
    registry = Registry(work)
    try:
        figures: dict[str, float | str] = {**dood(work, args), **dind(work, args, registry), "driver": args.driver}
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
        try:
            client.images.remove(TAG, force=True)
        except docker.errors.ImageNotFound:
            pass
    figures["dood_speedup"] = round(figures["dood_cold_s"] / figures["dood_warm_s"], 1)  # type: ignore[operator]
    figures["dind_speedup"] = round(figures["dind_cold_s"] / figures["dind_warm_s"], 1)  # type: ignore[operator]
    report(figures, args.json)


if __name__ == "__main__":
    main()
