"""How the escape suite drives a runtime and looks at the node: the farm it attacks (`Host`:
a data dir laid out as `farm up` lays it out, with things planted in it, the embedded Valkey,
the API and Ray on loopback), one executor per runtime (`Target`), and what the node showed
while an attack's jobs ran (`Seen`).

Host-side evidence is gathered here, not trusted from the step: processes of the job seen in
the node's /proc (their uid and user namespace), files appearing in the data dir, the node's
free space, whether it still starts processes, and the job's stored artifacts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cache import unmount_under
from farm.artifacts import DirectoryStore
from farm.models import Job, JobSpec, JobState
from farm.settings import Settings
from farm.store.jobs import JobStore
from tests.conftest import RunningExecutor, processes, wait_for
from tests.security.attacks import Attack, Batch, JobPlan, Verdict
from tests.security.scripts import step_script

JOB_MARGIN_S = 60  # past a job's timeout_s: a container's start on a loaded daemon, a build's base copy


@dataclass
class Host:
    """The farm under attack, as the node sees it."""

    data: Path  # farm's data dir
    redis_url: str
    secrets: dict[str, str]  # what the attacks try to read: planted, admin-token, valkey-password, environ, ptrace
    ports: dict[str, int]  # valkey, api, ray
    boot_id: str  # the node's kernel
    docker_id: str | None  # the host daemon's ID (None: no daemon here)
    image: str  # the steps' image: busybox and a docker client ("" without Docker)
    repo: str  # a git repository of links into the data dir
    victim_text: str
    bait: Path  # a filesystem the suite mounts in the data dir, for a link to lead farm's unmounts to

    def mount_bait(self) -> None:
        self.bait.mkdir(parents=True, exist_ok=True)
        if not os.path.ismount(self.bait):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "farm-escape-bait", str(self.bait)], check=True)


@dataclass
class Ran:
    job: Job
    log: str
    artifacts: dict[str, bytes]  # name -> what farm stored


@dataclass
class Seen:
    """What an attack's batch left: its jobs, and what the node showed meanwhile."""

    runtime: str
    host: Host
    nonce: str
    wsroot: Path  # the executor's workspace root
    runs: list[Ran] = field(default_factory=list)
    watched: dict[str, Any] = field(default_factory=dict)
    quota_note: str = ""


def sleeping(mark: str) -> list[int]:
    """Live processes that are `sleep <mark>` itself (busybox's or not), not a process whose
    arguments merely mention the mark (farm's own, spawning a build with it as a build arg)."""
    found = []
    for pid in processes(mark):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if args[-1] == mark.encode() and b"sleep" in [os.path.basename(a) for a in args[:-1]]:
            found.append(pid)
    return found


def describe(pid: int) -> dict[str, Any] | None:
    """A process as the node sees it: real uid, effective capabilities, user namespace map."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid_map = " ".join(Path(f"/proc/{pid}/uid_map").read_text().split()[:3])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    return {"pid": pid, "uid": int(fields["Uid"].split()[0]), "capeff": fields["CapEff"].strip(), "uid_map": uid_map,
            "cmdline": cmdline[:120]}  # fmt: skip


def allocated(path: Path) -> int:
    """Bytes allocated on disk to the files at or under `path` (links not followed)."""
    total = 0
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_blocks * 512
        for dirpath, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    continue
    except OSError:
        return 0
    return total


class Sampler:
    """Calls `sample` every `interval` s on a thread until stopped."""

    def __init__(self, sample: Callable[[], None], interval: float) -> None:
        self.sample, self.interval = sample, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)


@dataclass
class Target:
    """One runtime's executor and the farm it works for."""

    runtime: str
    executor: RunningExecutor
    store: JobStore
    settings: Settings
    host: Host
    pool: str
    seen: dict[str, Seen | Exception] = field(default_factory=dict)  # batches run so far, by name
    images: list[str] = field(default_factory=list)  # tags image jobs made (removed from the host daemon after)
    docker: Any = None  # the host daemon's client, when the runtime uses it
    current: str | None = None  # the job running now

    @property
    def wsroot(self) -> Path:
        return self.executor.executor.workspaces

    def observe(self, attack: Attack) -> Verdict:
        if self.runtime not in attack.runtimes:
            return Verdict("n/a", f"{attack.name} does not apply to the {self.runtime} runtime")
        name = attack.batch.name
        if name not in self.seen:
            try:
                self.seen[name] = self.run_batch(attack.batch)
            except Exception as e:
                self.seen[name] = e  # the batch's other attacks fail with it, without running it again
                raise
        got = self.seen[name]
        if isinstance(got, Exception):
            raise RuntimeError(f"the {name!r} jobs could not be run: {got}") from got
        return attack.judge(got)

    # -- running jobs -----------------------------------------------------------------------

    def env(self, nonce: str, marks: dict[str, str]) -> dict[str, str]:
        h = self.host
        return {
            "ESC_DATA": str(h.data), "ESC_WSROOT": str(self.wsroot), "ESC_NONCE": nonce, "ESC_IMAGE": h.image,
            "ESC_VALKEY_PORT": str(h.ports["valkey"]), "ESC_API_PORT": str(h.ports["api"]), "ESC_RAY_PORT": str(h.ports["ray"]),
            "ESC_PLANTED_SIZE": str(len(h.secrets["planted"])), **marks,
        }  # fmt: skip

    def spec(self, plan: JobPlan, nonce: str, env: dict[str, str], index: int) -> JobSpec:
        fmt = {"nonce": nonce, "image": self.host.image, "data": str(self.host.data)}
        dockerfile = plan.dockerfile.format(**fmt) if plan.dockerfile is not None else None
        spec: dict[str, Any] = {
            "pool": self.pool, "env": env, "timeout_s": plan.timeout_s, "retries": 0,
            "steps": [{"name": "attack", "run": step_script(plan.calls, dockerfile)}],
            "caches": [{"key": k.format(**fmt), "paths": [p], "save": "always"} for k, p in plan.caches],
            "artifacts": list(plan.artifacts),
        }  # fmt: skip
        if plan.source:
            spec["source"] = {"git": {"url": self.host.repo}}
        if dockerfile is not None:
            tag = f"{plan.tenant}/escape-{nonce}:{index}"
            self.images.append(tag)
            args = {k: v for k, v in env.items() if k.startswith("ESC_")}
            spec.update(kind="image", build={"tags": [tag], "build_args": args})
        return JobSpec(**spec)

    def run_job(self, plan: JobPlan, nonce: str, env: dict[str, str], index: int) -> Ran:
        job = self.store.submit(self.spec(plan, nonce, env, index), plan.tenant, tier=plan.tier).job
        self.current = job.id
        done: Job = wait_for(lambda: (j := self.store.get(job.id)).state.terminal and j, plan.timeout_s + JOB_MARGIN_S,
                             interval=0.05, what=f"job {job.id} to end")  # type: ignore[assignment]  # fmt: skip
        # The attempt's end comes after its finish: the workspace's removal, the runtime's end_job.
        wait_for(lambda: self.executor.executor.current != job.id, JOB_MARGIN_S, interval=0.02, what="the attempt to end")
        self.current = None
        artifacts = DirectoryStore(self.settings.artifact_dir)
        stored = {}
        for a in done.artifacts:
            with artifacts.open(done.id, done.attempt, a.name) as f:
                stored[a.name] = f.read(1 << 20)  # what a secret would be in: the start
        artifacts.delete(done.id)  # the race's decoy is 256 MiB
        log = self.log(done.id)
        if keep := os.environ.get("FARM_ESCAPE_LOGS"):  # every job's log, to read what an attack did
            Path(keep).mkdir(parents=True, exist_ok=True)
            Path(keep, f"{self.runtime}-{nonce}-{index}.log").write_text(f"{done.state.value} {done.error}\n{log}")
        return Ran(done, log, stored)

    def log(self, job_id: str) -> str:
        chunks, after = [], "-"
        while batch := self.store.read_log(job_id, after):
            chunks += [c.data for c in batch if c.data]
            after = batch[-1].entry_id
        return "".join(chunks)

    def run_batch(self, batch: Batch) -> Seen:
        nonce = secrets.token_hex(6)
        digits = lambda: f"{secrets.randbelow(10**6):06d}"  # noqa: E731
        marks = {
            "ESC_ROOT_MARK": f"2.{digits()}",
            "ESC_ROOT_MARK2": f"2.{digits()}",
            "ESC_LEFT_MARK": f"9{digits()[:2]}.{digits()}",
        }
        env = self.env(nonce, marks)
        if "bait" in batch.watch:
            self.host.mount_bait()
        seen = Seen(self.runtime, self.host, nonce, self.wsroot, quota_note=self.quota_note())
        watchers = []
        if "marks" in batch.watch:
            found: dict[int, dict[str, Any]] = {}
            seen.watched["marks"] = found

            def look_for_marks() -> None:
                for mark in (marks["ESC_ROOT_MARK"], marks["ESC_ROOT_MARK2"]):
                    for pid in sleeping(mark):
                        if pid not in found and (d := describe(pid)) is not None:
                            found[pid] = d

            watchers.append(Sampler(look_for_marks, 0.05))
        if "bomb" in batch.watch:
            bomb = {"peak": 0, "spawn_failures": 0, "left": []}
            seen.watched["bomb"] = bomb
            marker = f"farm-escape-bomb-{nonce}"

            def count_bomb() -> None:
                bomb["peak"] = max(bomb["peak"], len(processes(marker)))
                try:
                    subprocess.run(["true"], timeout=5, check=True)
                except (OSError, subprocess.SubprocessError):
                    bomb["spawn_failures"] += 1

            watchers.append(Sampler(count_bomb, 0.2))
        if "disk" in batch.watch:
            disk: dict[str, Any] = {"peak": 0, "where": {}, "left": []}
            seen.watched["disk"] = disk

            def held() -> None:
                if (parts := self.held_on_disk(nonce)) and sum(parts.values()) > disk["peak"]:
                    disk["peak"], disk["where"] = sum(parts.values()), parts

            watchers.append(Sampler(held, 0.2))
        try:
            for w in watchers:
                w.__enter__()
            for i, plan in enumerate(batch.jobs):
                seen.runs.append(self.run_job(plan, nonce, env, i))
        finally:
            for w in watchers:
                w.__exit__()
        self.after(batch, seen, nonce, marks)
        return seen

    def after(self, batch: Batch, seen: Seen, nonce: str, marks: dict[str, str]) -> None:
        """Host-side checks once the batch's jobs ended, and the clean-up of what they left."""
        if "bomb" in batch.watch:
            marker = f"farm-escape-bomb-{nonce}"
            try:
                wait_for(lambda: not processes(marker), 10, interval=0.1, what="the fork bomb to be gone")
            except AssertionError:
                seen.watched["bomb"]["left"] = processes(marker)
        if "followup" in batch.watch:  # the node (and the executor) still run a job
            job = self.store.submit(JobSpec(pool=self.pool, timeout_s=60, retries=0,
                                            steps=[{"name": "alive", "run": f"echo alive-{nonce}"}]), "victim").job  # fmt: skip
            done = wait_for(lambda: (j := self.store.get(job.id)).state.terminal and j, 60 + JOB_MARGIN_S,
                            what="the follow-up job")  # fmt: skip
            ok = done.state is JobState.SUCCEEDED and f"alive-{nonce}" in self.log(job.id) and self.store.client.ping()
            seen.watched["followup"] = {"ok": ok, "detail": f"{done.state.value} {done.error}"}
        if "disk" in batch.watch:
            job = seen.runs[0].job
            ws = self.wsroot / f"{job.id}-{job.attempt}"
            places = [ws, ws.with_name(ws.name + ".img"), ws.with_name(ws.name + ".disk"), Path("/tmp", f"fill-{nonce}")]
            seen.watched["disk"]["left"] = [p.name for p in places if p.exists()] + self.containers(job.id)
        if "leftover" in batch.watch:
            seen.watched["leftover"] = sleeping(marks["ESC_LEFT_MARK"])
        for pid in sleeping(marks["ESC_LEFT_MARK"]):  # ours: started by this batch's job
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for name in (f"leftover-{nonce}", f"fill-{nonce}"):  # what a local step leaves in the node's /tmp
            Path("/tmp", name).unlink(missing_ok=True)
        if "bait" in batch.watch:  # a swapped workspace: the link, and the workspace it replaced
            for p in self.wsroot.iterdir():
                if p.is_symlink():
                    p.unlink()
                elif p.name.endswith(".held"):
                    unmount_under(p)
                    shutil.rmtree(p, ignore_errors=True)

    def daemons(self) -> list[Any]:
        """The daemons the runtime's step containers run on: the host's, and dind's private one."""
        found = [self.docker] if self.docker is not None else []
        if self.runtime == "dind" and getattr(self.executor.executor.runtime, "_client", None) is not None:
            found.append(self.executor.executor.runtime.client)  # type: ignore[attr-defined]
        return found

    def containers(self, job_id: str, *, size: bool = False) -> list[Any]:
        """The job's step containers (by the `farm.job` label the runtimes put on them)."""
        found = []
        for client in self.daemons():
            try:
                found += client.api.containers(all=True, size=size, filters={"label": f"farm.job={job_id}"})
            except Exception:  # noqa: BLE001 - a daemon going away is not what is measured
                continue
        return found if size else [c["Id"][:12] for c in found]

    def held_on_disk(self, nonce: str) -> dict[str, int] | None:
        """What the running job holds on the node's disks: its workspace (files' allocated
        blocks), its containers' writable layers, and the file a local step writes in /tmp."""
        if self.current is None:
            return None
        ws = self.wsroot / f"{self.current}-1"
        return {
            "workspace": allocated(ws),
            "container layers": sum(int(c.get("SizeRw") or 0) for c in self.containers(self.current, size=True)),
            "the node's /tmp": allocated(Path("/tmp", f"fill-{nonce}")),
        }

    def quota_note(self) -> str:
        q = getattr(self.settings.executors, "disk_quota_bytes", None)
        return "enforced" if q else "not configured (executors.disk_quota_bytes does not exist yet)"

    def close(self) -> None:
        if self.docker is not None:
            for tag in self.images:
                try:
                    self.docker.images.remove(tag, force=True)
                except Exception:  # noqa: BLE001 - built elsewhere (dind), or never built
                    pass


def tools_image(client: Any, base: str) -> str:
    """The steps' image: `base` (busybox) plus the host's docker client, with the shared
    libraries it needs when it is not a static binary. Built once per client binary."""
    import hashlib
    import io
    import tarfile

    cli = shutil.which("docker")
    if cli is None:
        return base
    real = os.path.realpath(cli)
    digest = hashlib.sha256(Path(real).read_bytes()).hexdigest()[:12]
    tag = f"farm-escape/tools:{digest}"
    if client.images.list(name=tag):
        return tag
    libs = []
    ldd = subprocess.run(["ldd", real], capture_output=True, text=True)
    if ldd.returncode == 0:
        for line in ldd.stdout.splitlines():
            parts = line.replace("=>", " ").split()
            libs += [p for p in parts if p.startswith("/")]
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add(real, arcname="docker")
        for i, lib in enumerate(libs):
            tar.add(os.path.realpath(lib), arcname=f"lib{i}")
        copies = "".join(f"COPY lib{i} {lib}\n" for i, lib in enumerate(libs))
        dockerfile = f"FROM {base}\nCOPY docker /bin/docker\n{copies}".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, pull=False, network_mode="none", rm=True)
    return tag


def make_repo(where: Path, data: Path) -> str:
    """A git repository whose checkout plants links into the data dir (absolute, relative
    from the workspace root, and to a directory)."""
    repo = where / "links-repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    os.symlink(data / "victim" / "chown-me", repo / "chown-abs")
    os.symlink("../../../victim/chown-me", repo / "chown-rel")
    os.symlink(data / "victim", repo / "chown-dir")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "links"], check=True)
    return str(repo)
