"""`farm up`: the whole farm on one machine with embedded defaults.

Starts, in order: the embedded Redis-compatible server (unless FARM_REDIS_URL is set), a
local Ray on loopback, this node's warden (agents/warden.py), the executor actors of the
default pool (unless a capacity policy sizes it; Ray restarts one that dies), the
autoscaler actor, the supervisor (farm/supervisor.py: restarts the server if it dies), then
the API (the caller serves it), and beside them the lifeline (agents/lifeline.py), a process
that ends the node's work if `farm up` dies without stopping. Stops in reverse: the supervisor and the autoscaler stop,
every executor drains, whatever still runs after the drain timeout is killed (its job runs
again on the next start: the lease expires and the node fences it), Ray shuts down, the
server flushes its AOF and exits.

This module starts and stops Ray and the actors on it; what the actors are (their names,
classes, placement) is farm/ray_seam.py's, the one other module that imports `ray`.

Joining a Ray cluster (`ray.address`) that cannot be joined is a `RayUnavailable`, never
Ray's own `ConnectionError`: it says whether the cluster's token auth refused farm (and what
to set) or the cluster could not be reached.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from farm.errors import FarmError
from farm.settings import Settings
from farm.store.server import EmbeddedRedis, write_private

log = logging.getLogger("farm.up")

ADMIN_TOKEN_FILE = "admin-token"


class RayUnavailable(FarmError):
    """The Ray cluster at `ray.address` cannot be joined. `auth`: its token authentication
    refused farm, a setting of farm's environment to fix; else it could not be reached."""

    def __init__(self, message: str, *, auth: bool) -> None:
        super().__init__(message)
        self.auth = auth


# How Ray 2.60 reports a refused token. With RAY_AUTH_MODE=token and no token anywhere,
# ray.init raises AuthenticationError before connecting. A missing (RAY_AUTH_MODE unset, so
# none is sent) or wrong token is refused by the GCS on every retry, and ray.init raises
# `ConnectionError: Failed to connect to Ray cluster at …` from a RuntimeError whose message
# holds the last retry's traceback as text, ending in that AuthenticationError.
_AUTH_MARKERS = ("AuthenticationError", "InvalidAuthToken", "UNAUTHENTICATED", "Unauthenticated")
_THE_TOKEN = "RAY_AUTH_TOKEN=<the cluster's token> (or RAY_AUTH_TOKEN_PATH=<a file holding it>)"


def _token_refused(e: BaseException) -> bool:
    seen: BaseException | None = e
    for _ in range(8):  # a chain is short; a bound, in case one loops
        if seen is None:
            break
        if type(seen).__name__ == "AuthenticationError" or any(m in str(seen) for m in _AUTH_MARKERS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def ray_join_error(address: str, e: BaseException) -> RayUnavailable | None:
    """Ray's failure to join the cluster at `address` in farm's words, or None when `e` is
    not one (anything else propagates as it is)."""
    if _token_refused(e):
        mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
        if mode != "token":
            why = (f"it has token authentication on, and RAY_AUTH_MODE is {mode or 'unset'} here, so farm sent no token; "
                   f"set RAY_AUTH_MODE=token and {_THE_TOKEN} in farm's environment")  # fmt: skip
        elif type(e).__name__ == "AuthenticationError":
            why = f"RAY_AUTH_MODE=token here, but farm found no token; set {_THE_TOKEN} in farm's environment"
        else:
            why = ("it refused the token farm sent (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); "
                   f"set {_THE_TOKEN} in farm's environment, with RAY_AUTH_MODE=token")  # fmt: skip
        return RayUnavailable(f"cannot join the Ray cluster at {address}: {why}", auth=True)
    if isinstance(e, ConnectionError):
        return RayUnavailable(f"cannot reach the Ray cluster at {address}: is it up, and is that its head's GCS address (host:port)?",
                              auth=False)  # fmt: skip
    return None


def join_ray(address: str, **options: Any) -> None:
    """`ray.init(address=…)` of an existing cluster, its failures as `RayUnavailable`."""
    import ray

    try:
        ray.init(address=address, **options)
    except Exception as e:  # noqa: BLE001 - translated at the boundary, or re-raised as it is
        translated = ray_join_error(address, e)
        if translated is None:
            raise
        raise translated from e


def ensure_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token: FARM_ADMIN_TOKEN if set, else the one kept (0600) in the data dir,
    else a new one written there. Returns (token, newly_created)."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value(), False
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token, True


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """A local Ray of its own on loopback, no dashboard, no usage reporting (its defaults
    would bind the machine's network address and report usage outward). `address="local"`:
    never join a cluster that RAY_ADDRESS or an earlier `ray start` on this machine points
    at (a stale one made `farm up` hang).

    Loopback only: Ray 2.60 rewrites `_node_ip_address="127.0.0.1"` to the machine's address
    (`services.resolve_ip_for_localhost`) unless cluster mode is off
    (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read when ray is imported; set on the constant too
    in case it already was). With a loopback node address, its gRPC servers (GCS, raylet,
    object manager, every worker) listen on 127.0.0.1, not 0.0.0.0; the runtime-env agent and
    the monitor follow the node address, and the monitor's metrics port is made ephemeral
    (`AUTOSCALER_METRIC_PORT=0`) instead of a fixed 44217 another Ray may hold. Workers
    inherit this environment. tests/e2e/test_farm_up.py reads every listener with `ss`.

    With `address` (`ray.address`), join that cluster instead, from one of its nodes (this
    process becomes a driver of it; its nodes, resources and token are the cluster's: with
    token auth on, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN in this environment, which the
    workers it starts inherit). A cluster on loopback keeps its node address there too."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    loopback = address is None or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]")
    import ray

    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("AUTOSCALER_METRIC_PORT", "0")
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    if ray.is_initialized():
        return
    if address is not None:
        join_ray(address, log_to_driver=False, logging_level=logging.WARNING,
                 **({"_node_ip_address": "127.0.0.1"} if loopback else {}))  # fmt: skip
        return
    ray.init(_node_ip_address="127.0.0.1", address="local",  # fmt: skip
        include_dashboard=False,
        num_cpus=num_cpus or os.cpu_count() or 1,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


@dataclass
class EmbeddedFarm:
    settings: Settings
    redis: EmbeddedRedis | None = None
    actors: list[Any] = field(default_factory=list)
    autoscaler: Any = None
    warden: Any = None
    instance: str = ""  # the farm's id (its wardens are named after it)
    supervisor: Any = None  # (thread, stop event) of the supervisor loop
    resolved: Settings | None = None  # with the Redis URL and admin token in force
    admin_token: str = ""
    token_created: bool = False
    lifeline: Any = None  # the process that ends the node's work if farm up is killed

    def start(self) -> Settings:
        """Start Redis, Ray and the executors; returns the settings the API should use
        (with the resolved Redis URL and admin token)."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(s.data_dir, 0o700)
        self.admin_token, self.token_created = ensure_admin_token(s)
        url = s.redis_url
        if not url:
            self.redis = EmbeddedRedis(s.data_dir / "redis", port=s.redis.port, fsync=s.redis.aof_fsync, maxmemory=s.redis.maxmemory)
            url = self.redis.start()
        resolved = s.model_copy(update={"redis_url": url, "admin_token": SecretStr(self.admin_token)})
        self.resolved = resolved
        self.start_warden(resolved)
        self.start_lifeline()
        if s.executors.count and s.executors.pool not in s.policies:
            self.start_executors(resolved)
        if s.autoscaler.enabled:
            self.start_autoscaler(resolved)
        from farm.supervisor import Supervisor

        self.supervisor = Supervisor(self).start()
        return resolved

    def start_warden(self, settings: Settings) -> None:
        """This node's warden, before any executor: the reaper fences only on a node whose
        warden beats, and a fresh farm first clears what a crashed one left running."""
        import ray

        from farm.actors import ensure_warden
        from farm.ray_seam import actor_settings
        from farm.store.client import connect
        from farm.store.jobs import JobStore

        init_ray(address=settings.ray.address)
        self.instance = JobStore(connect(settings.redis_url or "")).instance()
        self.warden = ensure_warden(settings, self.instance, actor_settings(settings))
        ray.get(self.warden.run_once.remote(), timeout=60)

    def start_lifeline(self) -> None:
        import json

        from farm.actors import start_lifeline
        from farm.ray_seam import actor_settings

        assert self.resolved is not None
        self.lifeline = start_lifeline(json.dumps(actor_settings(self.resolved)), self.instance)

    def start_autoscaler(self, settings: Settings) -> None:
        from farm.autoscale.live import start_autoscaler

        init_ray(address=settings.ray.address)
        self.autoscaler = start_autoscaler(settings)

    def start_executors(self, settings: Settings) -> None:
        from farm.actors import executor_actor
        from farm.ray_seam import actor_settings, executor_name, pool_resources

        init_ray(address=settings.ray.address)
        actor = executor_actor()
        pool = settings.executors.pool
        plain = actor_settings(settings)
        for i in range(settings.executors.count):
            executor_id = f"{pool}-{i}-{uuid.uuid4().hex[:6]}"
            # A static executor that dies is restarted by Ray in its slot (the pool keeps its size).
            handle = actor.options(name=executor_name(executor_id), max_restarts=-1,
                                   resources=pool_resources(settings, pool)).remote(executor_id, plain)  # fmt: skip
            self.actors.append(handle)
        import ray

        ray.get([a.start.remote() for a in self.actors])
        # Say now if executors cannot start (no daemon, image missing), not with jobs queued forever.
        wait_s = settings.autoscaler.start_timeout_s
        failures = [f for f in ray.get([a.started.remote(wait_s) for a in self.actors]) if f]
        if failures and len(failures) == len(self.actors):
            raise FarmError(f"no executor could start ({settings.executors.runtime} runtime): {failures[0]}")
        for failure in failures:
            log.warning("an executor could not start: %s", failure)

    def stop_executors(self, drain_timeout_s: float = 10.0) -> None:
        """Drain every executor, those the autoscaler started too (a job still running after
        the timeout is left to its lease)."""
        import ray

        if not ray.is_initialized():
            return
        if self.autoscaler is not None:
            try:
                starting = ray.get(self.autoscaler.stop.remote(), timeout=15)
            except Exception as e:  # noqa: BLE001 - shutting down whatever happens
                log.warning("autoscaler did not stop cleanly: %s", e)
                starting = []
            ray.kill(self.autoscaler)
            self.autoscaler = None
            from farm.actors import executor_actor
            from farm.ray_seam import RayFleet

            RayFleet(self.settings, executor_actor).kill(starting)  # asked for, not ready: nothing of theirs to drain
        self.actors.extend(self._scaled_executors())
        if not self.actors:
            return

        try:
            ray.get([a.drain.remote(drain_timeout_s) for a in self.actors], timeout=drain_timeout_s + 5)
        except Exception as e:  # noqa: BLE001 - shutting down whatever happens
            log.warning("executors did not drain cleanly: %s", e)
        for a in self.actors:
            ray.kill(a)
        self.actors.clear()

    def clear_node(self) -> None:
        """Kill what outlived the drain, on every node this farm's executors ran on: it must
        not outlive farm (its job runs again on the next start, once the node has fenced it).
        On a cluster farm joined, the wardens go too (a Ray of farm's own goes down whole)."""
        import ray

        from farm.ray_seam import find_wardens

        if self.warden is None or not ray.is_initialized():
            return
        wardens = find_wardens(self.instance)
        refs = [w.kill_all.remote() for w in wardens]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=30)  # a dead node's warden never answers
        killed = 0
        for ref in ready:
            try:
                killed += ray.get(ref)
            except Exception as e:  # noqa: BLE001 - shutting down whatever happens
                log.warning("a warden could not clear its node: %s", e)
        if killed:
            log.warning("killed %d attempt(s) still running after the drain; they will run again", killed)
        if self.settings.ray.address:
            for w in wardens:
                ray.kill(w, no_restart=True)
        self.warden = None

    def _scaled_executors(self) -> list[Any]:
        from farm.ray_seam import executor_name, find_actor
        from farm.store.client import connect
        from farm.store.executors import ExecutorRegistry

        found = []
        try:
            registry = ExecutorRegistry(connect(self.resolved.redis_url or "" if self.resolved else ""))
            ids = [e.id for pool in self.settings.pools for e in registry.list(pool)]
        except Exception as e:  # noqa: BLE001 - shutting down whatever happens
            log.warning("could not list the executors: %s", e)
            return []
        for executor_id in ids:
            handle = find_actor(executor_name(executor_id))
            if handle is not None:  # else a static one (already in self.actors) or gone
                found.append(handle)
        return found

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        if self.supervisor is not None:
            thread, stop = self.supervisor
            stop.set()
            thread.join(10)
            self.supervisor = None
        self.stop_executors(drain_timeout_s)
        self.clear_node()
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.lifeline is not None:
            self.lifeline.terminate()  # stopped in order: nothing of farm is left to end
            self.lifeline.wait(10)
            self.lifeline = None
