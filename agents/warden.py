"""The warden: one per node (and farm). It makes "attempt N+1 never starts while anything of
attempt N lives" hold when executors die.

Each pass (`run_once`, every `lease.warden_interval_s`):
    beat the node ─▶ fence what the node owes ─▶ kill leftovers
- **Beat**: the reaper fences an expired lease only on a node whose warden beats (else the
  node is presumed gone, with its processes).
- **Fences**: for each attempt whose lease expired here, kill everything of it on this node
  (its cgroup; its step containers on the host's daemon; a DinD executor's whole private
  daemon), mark it so it can start nothing more, and confirm: only then is the job requeued.
- **Leftovers**: anything of this farm the node holds (cgroups, lock files, labelled step
  containers) whose attempt is no longer running is killed the same way: a job cancelled
  while its executor was gone, or an executor that died between its finish and its cleanup.

A fenced attempt's lock file says "fenced" and stays a day, so a stalled executor that
wakes up later is refused when it tries to start anything for it.

`WardenActor` (bottom) hosts it on Ray: detached, named per node and farm, pinned to its
node, restarted by Ray when it dies. farm up starts it before its executors; every
executor makes sure its node has one (on a cluster, that is how a new node gets its warden).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from agents import quota
from agents.cache import overlays_possible
from agents.containment import FENCED, Containment
from agents.workspace import workspace_root
from farm import loops
from farm.ray_seam import actor_class, pinned_here, restarted, warden_name
from farm.settings import RAY_NAMESPACE, Settings
from farm.store.client import connect
from farm.store.jobs import JobStore
from farm.store.nodes import NodeBook, count_restart

log = logging.getLogger("farm.warden")

FENCE_MARK_KEEP_S = 24 * 3600.0


def node_name(settings: Settings) -> str:
    """The node this process runs on, as executors and wardens name it: `executors.node`,
    else FARM_NODE in this process's environment (a Ray node's own, which its workers
    inherit), else the host name (a machine's, or a pod's for its life)."""
    return settings.executors.node or os.environ.get("FARM_NODE") or socket.gethostname()


@dataclass
class WardenPass:
    fenced: list[tuple[str, int]] = field(default_factory=list)  # confirmed: nothing of them runs here
    unconfirmed: list[tuple[str, int]] = field(default_factory=list)  # something survived the kill: try again
    killed: list[tuple[str, int]] = field(default_factory=list)  # leftovers of attempts that had ended


class Warden:
    def __init__(self, node: str, settings: Settings, *, jobs: JobStore, containment: Containment) -> None:
        self.node = node
        self.settings = settings
        self.jobs = jobs
        self.nodes = NodeBook(jobs.client, jobs.keys)
        self.containment = containment
        self.runtime = settings.executors.runtime
        self._docker = None

    # -- what this node holds ---------------------------------------------------------------

    @property
    def docker(self):  # type: ignore[no-untyped-def]
        """The host's daemon, for the docker and dind runtimes (None when unreachable)."""
        if self.runtime not in ("docker", "dind", "sandbox"):
            return None
        if self._docker is None:
            import docker

            try:
                self._docker = docker.from_env(timeout=30)
            except docker.errors.DockerException as e:
                log.warning("warden: the docker daemon is unreachable: %s", e)
        return self._docker

    def _step_containers(self) -> dict[tuple[str, int], list]:  # type: ignore[type-arg]
        """This farm's step containers on the host's daemon, by attempt."""
        client = self.docker
        if client is None:
            return {}
        out: dict[tuple[str, int], list] = {}  # type: ignore[type-arg]
        try:
            for c in client.containers.list(all=True, filters={"label": f"farm.instance={self.containment.instance}"}):
                attempt = c.labels.get("farm.attempt", "")
                if attempt.isdigit():
                    out.setdefault((c.labels.get("farm.job", ""), int(attempt)), []).append(c)
        except Exception as e:  # noqa: BLE001 - the daemon is an adapter: log and try next pass
            log.warning("warden: cannot list containers: %s", e)
        return out

    def _remove(self, containers: list) -> bool:  # type: ignore[type-arg]
        import docker.errors

        ok = True
        for c in containers:
            try:
                c.remove(force=True, v=True)  # killed and gone: a created, unstarted one can never start
            except docker.errors.NotFound:
                pass
            except Exception as e:  # noqa: BLE001
                log.warning("warden: cannot remove container %s: %s", c.name, e)
                ok = False
        return ok

    def _remove_ids(self, ids: list[str]) -> bool:
        """Containers the attempt noted by id (an image build's RUN container)."""
        client = self.docker
        if client is None or not ids:
            return True
        import docker.errors

        found = []
        for container_id in ids:
            try:
                found.append(client.containers.get(container_id))
            except docker.errors.NotFound:
                pass
            except Exception as e:  # noqa: BLE001
                log.warning("warden: cannot look up container %s: %s", container_id, e)
                return False
        return self._remove(found)

    def _dind_daemon_gone(self, executor: str) -> bool:
        """A DinD executor's private daemon, and every container a step made in it, gone."""
        client = self.docker
        if client is None or self.runtime != "dind" or not executor:
            return True
        if self.settings.dind.docker_host is not None:
            return self._clear_sidecar()
        try:
            found = client.containers.list(all=True, filters={"label": [f"farm.executor={executor}", "farm.dind=1"]})
        except Exception as e:  # noqa: BLE001
            log.warning("warden: cannot list dind daemons: %s", e)
            return False
        return self._remove(found)

    def _clear_sidecar(self) -> bool:
        """The chart's sidecar daemon serves one executor: all its containers were the job's."""
        import docker

        try:
            client = docker.DockerClient(base_url=self.settings.dind.docker_host, timeout=30)
            return self._remove(client.containers.list(all=True))
        except Exception as e:  # noqa: BLE001
            log.warning("warden: cannot reach the sidecar daemon: %s", e)
            return False

    # -- one pass ---------------------------------------------------------------------------

    def kill(self, job_id: str, attempt: int, *, executor: str = "", containers: list | None = None) -> bool:  # type: ignore[type-arg]
        """Mark the attempt fenced here and kill everything of it; True when nothing lives."""
        ok = self.containment.fence(job_id, attempt)
        if containers is None:
            containers = self._step_containers().get((job_id, attempt), [])
        ok = self._remove(containers) and ok
        ok = self._remove_ids(self.containment.adopted(job_id, attempt)) and ok
        ok = self._dind_daemon_gone(executor) and ok
        if executor and overlays_possible():
            # What the dead executor mounted: its attempt's warm cache overlays and bounded
            # workspace (agents/quota.py: its image is the workspace sweep's to delete), and
            # for DinD the bind mount that shares its workspaces with its daemon.
            root = workspace_root(self.settings) / executor
            workspace = root / f"{job_id}-{attempt}"
            places = [root] if self.runtime == "dind" else [workspace, quota.BoundedDisk(workspace).disk]
            quota.unmount(quota.mounts_under(*places))
        return ok

    def run_once(self) -> WardenPass:
        done = WardenPass()
        self.nodes.beat(self.node)
        for job_id, attempt, executor in self.nodes.fences(self.node):
            if self.kill(job_id, attempt, executor=executor):
                outcome = self.jobs.fenced(job_id, attempt, self.node)
                done.fenced.append((job_id, attempt))
                log.info("fenced attempt %d of job %s on %s: %s", attempt, job_id, self.node, outcome)
            else:
                done.unconfirmed.append((job_id, attempt))
        containers = self._step_containers()
        held = sorted(set(self.containment.attempts()) | set(containers))
        if held:
            live = self.nodes.live(held)
            for job_id, attempt in held:
                if (job_id, attempt) in live or (job_id, attempt) in done.fenced:
                    continue
                if self._leftover(job_id, attempt) or (job_id, attempt) in containers:
                    self.kill(job_id, attempt, containers=containers.get((job_id, attempt), []))
                    done.killed.append((job_id, attempt))
        self._sweep_marks()
        return done

    def kill_all(self) -> int:
        """Kill every attempt of this farm on the node (farm up stopping: what outlived the
        drain must not outlive farm). Returns how many were running and are no more: what
        the node holds also counts fenced marks, empty cgroups and exited step containers,
        and killing those kills nothing (an idle farm kills 0)."""
        containers = self._step_containers()
        killed = 0
        for job_id, attempt in sorted(set(self.containment.attempts()) | set(containers)):
            own = containers.get((job_id, attempt), [])
            running = bool(self._pids(job_id, attempt)) or any(c.status in ("running", "paused", "restarting") for c in own)
            if self.kill(job_id, attempt, containers=own) and running:
                killed += 1
        self._release_workspaces()
        return killed

    def _release_workspaces(self) -> None:
        """farm stopping: nothing of it runs on this node any more, so every bounded workspace
        (agents/quota.py) gives its mount, loop device and disk back now rather than at the
        next start's sweep. A job killed here runs again in a fresh workspace anyway."""
        for image in workspace_root(self.settings).glob("*/*.img"):
            try:
                quota.release(image.with_name(quota.workspace_of(image.name)))
            except OSError as e:  # best effort while stopping: the next start's sweep tries again
                log.warning("warden: cannot release %s: %s", image, e)

    def _pids(self, job_id: str, attempt: int) -> list[int]:
        """The processes of the attempt's cgroup here (none without cgroups: nothing to find)."""
        return self.containment.cgroups.pids(self.containment.name(job_id, attempt)) if self.containment.cgroups else []

    def _leftover(self, job_id: str, attempt: int) -> bool:
        """Whether an attempt that is not live still has something to kill here (a fenced
        mark with an empty cgroup has nothing: it stays as a mark)."""
        pids = self._pids(job_id, attempt)
        mark = self.containment.run_dir / self.containment.name(job_id, attempt)
        try:
            fenced = mark.read_bytes() == FENCED
        except FileNotFoundError:
            fenced = False
        if not fenced:
            return True
        if not pids and self.containment.cgroups is not None:
            self.containment.cgroups.remove(self.containment.name(job_id, attempt))
        return bool(pids)

    def _sweep_marks(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for path in self.containment.run_dir.iterdir():
            try:
                if now - path.stat().st_mtime > FENCE_MARK_KEEP_S:
                    path.unlink()
            except FileNotFoundError:
                pass



def build_warden(settings: Settings, node: str | None = None) -> Warden:
    jobs = JobStore(connect(settings.redis_url or ""))
    containment = Containment.for_node(jobs.instance(), Path(settings.data_dir))
    return Warden(node or node_name(settings), settings, jobs=jobs, containment=containment)


class WardenActor:
    """The warden as a Ray actor (`warden_actor()` is its actor class): its passes on a thread."""

    def __init__(self, settings: dict, node: str) -> None:  # type: ignore[type-arg]
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.warden = build_warden(Settings.load(**settings), node)
        if restarted():
            count_restart(self.warden.jobs, "warden")
        # Started here, not in a method: a restarted actor runs only __init__.
        self.thread, self.stop = loops.start("warden", self.warden.run_once, self.warden.settings.lease.warden_interval_s, log)

    def run_once(self) -> dict:  # type: ignore[type-arg]
        done = self.warden.run_once()
        return {"fenced": done.fenced, "unconfirmed": done.unconfirmed, "killed": done.killed}

    def kill_all(self) -> int:
        return self.warden.kill_all()

    def pid(self) -> int:
        return os.getpid()


warden_actor = actor_class(WardenActor, num_cpus=0, max_restarts=-1, max_concurrency=2)


def ensure_warden(settings: Settings, instance: str, plain: dict) -> object:  # type: ignore[type-arg]
    """This node's warden actor for this farm: found, or started (detached, pinned here)."""
    node = node_name(settings)
    here = pinned_here()
    return (
        warden_actor()
        .options(name=warden_name(instance, node), namespace=RAY_NAMESPACE, lifetime="detached", get_if_exists=True, scheduling_strategy=here)
        .remote(plain, node)
    )
