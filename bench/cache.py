"""The dependency cache against what users would otherwise pick, in one run.

Tree: this interpreter's site-packages (a real dependency store: many small files, some
large shared objects), which must hold at least 300 MB in 10,000 files.

- cold node (the entry only in the shared store): farm's restore (the job path: index
  lookup, verified packs, parallel decompression straight into files) against the
  actions/cache method on the same tree, `zstd -d -T0 -c tree.tar.zst | tar -x`, and a raw
  `tar -c | tar -x` copy;
- warm node (this node restored the entry before): the overlay mount of the node's copy;
- a real job: pip installing a pinned requirements set from the package index (pip told to
  read no configuration, so no local wheel directory or mirror), cold, then warm with its
  cache restored (the job installs only on a miss, as CI configs do with a cache hit).

Every restore figure is the median of --repeat runs; all inputs sit in the page cache for
both farm and the tools. Needs root for the warm overlay, and PyPI for the job
(--no-job skips it).

Usage: python bench/cache.py [--json] [--repeat 3] [--no-job]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import progress, report  # noqa: E402

from agents.cache import JobCaches, overlays_possible  # noqa: E402
from agents.workspace import Workspace  # noqa: E402
from farm.cache import archive  # noqa: E402
from farm.models import JobSpec, JobState  # noqa: E402
from farm.settings import Settings  # noqa: E402
from farm.store.client import connect
from farm.store.jobs import Claim, JobStore  # noqa: E402
from farm.store.server import EmbeddedRedis  # noqa: E402

REQUIREMENTS = """\
requests==2.32.3
rich==13.9.4
pydantic==2.10.4
httpx==0.28.1
PyYAML==6.0.2
Jinja2==3.1.5
click==8.1.8
numpy==2.2.1
"""
JOB = ('echo "$REQS" > requirements.txt; [ -d deps ] || "$PY" -m pip install -q --target deps -r requirements.txt; '
       'PYTHONPATH=deps "$PY" -c "import requests, rich, pydantic, httpx, yaml, jinja2, click, numpy; print(numpy.__version__)"')  # fmt: skip
# pip must read no configuration (this machine's points at local wheels and a mirror) and
# keep no cache of its own: the cache under test is the only one.
PIP_ENV = {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1", "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(fn, repeat: int, reset) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        reset()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def tree_of(src: Path) -> tuple[int, int]:
    files = size = 0
    for p in src.rglob("*"):
        if p.is_file() and not p.is_symlink():
            files += 1
            size += p.stat().st_size
    return size, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-job", action="store_true", help="skip the pip job (needs PyPI)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="farm-bench-cache-"))
    redis = EmbeddedRedis(work / "redis")
    try:
        figures = run(work, redis.start(), args)
    finally:
        redis.stop()
        subprocess.run(["umount", "-l", str(work / "ws")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    report(figures, args.json)


def run(work: Path, redis_url: str, args: argparse.Namespace) -> dict[str, float | int | str]:
    site = Path(sysconfig.get_paths()["purelib"])
    src = work / "src"
    progress(f"copying {site} as the dependency tree")
    shutil.copytree(site, src / "deps", symlinks=True)
    size, files = tree_of(src / "deps")
    if size < 300e6 or files < 10_000:
        raise SystemExit(f"the tree is {size / 1e6:.0f} MB in {files} files: need >= 300 MB in >= 10,000")
    figures: dict[str, float | int | str] = {"tree_mb": round(size / 1e6), "tree_files": files}
    settings = Settings.load(redis_url=redis_url, data_dir=work / "data")
    store = JobStore(connect(redis_url))

    def caches(overlay: bool, job: str) -> JobCaches:
        s = settings.model_copy(update={"cache": settings.cache.model_copy(update={"overlay": overlay})})
        spec = JobSpec(steps=[{"name": "s", "run": "true"}], caches=[{"key": "deps", "paths": ["deps"]}])
        claim = Claim(job, 1, spec, "bench", tier="protected")
        return JobCaches(claim, Workspace(work / "workspaces", job, 1), store, s, lambda _: None)

    # Save once (timed once: not a figure the issue asks for).
    saver = caches(False, "save")
    t0 = time.perf_counter()
    saved = archive.save(src, ["deps"], saver.index.blobs)
    saver.index.commit(saver.scope, "deps", saved)
    figures["save_s"] = round(time.perf_counter() - t0, 3)
    figures["stored_mb"] = round(sum((saver.index.blobs.root / b[:2] / b).stat().st_size for b in saved.blobs) / 1e6)
    progress(f"saved {size / 1e6:.0f} MB in {files} files as {figures['stored_mb']} MB in {figures['save_s']} s")

    ws = work / "ws"

    def fresh() -> None:
        subprocess.run(["umount", "-l", str(ws / "deps")], capture_output=True)
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir()

    def restore(overlay: bool):  # type: ignore[no-untyped-def]
        def go() -> None:
            c = caches(overlay, "job")
            c.workspace.path = ws
            c.restore()
            assert c.results[0].restore == "hit", c.results

        return go

    figures["cold_restore_s"] = timed(restore(False), args.repeat, fresh)
    progress(f"farm cold restore: {figures['cold_restore_s']} s")
    sh(f"tar -C {src} -cf - deps | zstd -q -T0 -3 -o {work}/tree.tar.zst")
    figures["zstd_tar_restore_s"] = timed(lambda: sh(f"zstd -q -d -T0 -c {work}/tree.tar.zst | tar -C {ws} -xf -"), args.repeat, fresh)
    progress(f"zstd -d -T0 | tar -x: {figures['zstd_tar_restore_s']} s")
    figures["raw_tar_copy_s"] = timed(lambda: sh(f"tar -C {src} -cf - deps | tar -C {ws} -xf -"), args.repeat, fresh)
    progress(f"tar | tar copy: {figures['raw_tar_copy_s']} s")
    if overlays_possible():
        fresh()
        restore(True)()  # the node unpacks its copy once
        figures["warm_restore_s"] = timed(restore(True), args.repeat, fresh)
        progress(f"farm warm restore (overlay on the node's copy): {figures['warm_restore_s']} s")
    fresh()
    if not args.no_job:
        figures.update(job_figures(settings))
    return figures


def job_figures(settings: Settings) -> dict[str, float]:
    """The pip job through a real executor (local runtime), cold then warm."""
    from agents.executor import build_executor

    executor = build_executor("bench-cache", settings)
    thread = threading.Thread(target=executor.run, daemon=True)
    thread.start()
    store = executor.store
    spec = JobSpec(steps=[{"name": "pip", "run": JOB}], env={**PIP_ENV, "REQS": REQUIREMENTS, "PY": sys.executable},
                   caches=[{"key": f"pip-{hashlib.sha256(REQUIREMENTS.encode()).hexdigest()[:16]}-{time.time_ns()}",
                             "paths": ["deps"]}],
                   timeout_s=900)  # fmt: skip
    out = {}
    try:
        for name in ("job_cold_s", "job_warm_s"):
            job = store.enqueue(spec, "bench")
            while not (done := store.get(job.id)).state.terminal:
                time.sleep(0.2)
            if done.state is not JobState.SUCCEEDED:
                log = "".join(c.data for c in store.read_log(job.id) if c.data)
                raise SystemExit(f"the pip job failed:\n{log[-3000:]}")
            took = (_ms(done.finished_at) - _ms(done.started_at)) / 1000
            out[name] = round(took, 2)
            progress(f"{name}: {took:.1f} s, cache {done.caches[0].restore}")
    finally:
        executor.drain()
        thread.join(60)
    return out


def _ms(ts: str | None) -> float:
    from farm.models import parse_rfc3339

    assert ts is not None
    return parse_rfc3339(ts).timestamp() * 1000


if __name__ == "__main__":
    main()
