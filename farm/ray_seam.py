"""The seam to Ray: how farm's work becomes Ray actors, and the fleet of executors the
autoscaler sizes. Apart from `farm up`'s start-up (farm/embedded.py: joining or starting
Ray, stopping what it started), nothing else of farm or agents imports `ray`
(tests/unit/test_ray_seam.py counts). Loading this module loads no Ray.

    names      every named actor of a farm: `executor-<id>`, `warden-<instance>-<node>`,
               `autoscaler`, in RAY_NAMESPACE (but `farm up`'s static executors, in the
               namespace of the `farm up` that owns them)
    classes    `actor_class(Body, **options)`: the one lazy factory; the executor, warden
               and autoscaler keep their bodies in their modules, plain classes that become
               Ray actors on first use (importing them needs no Ray)
    placement  a pool's resources (KubeRay worker groups), a warden pinned to its node
    fleet      `Fleet`, what the autoscaler asks of its executors (start, drain, kill,
               request room, reap); `RayFleet` does it with actors, `StubFleet` records it
               (tests)

It knows nothing of `agents`, which build their actors through it: the executor's actor
class comes to `RayFleet` from farm/actors.py, the one module of farm that reaches into
`agents`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from farm.settings import RAY_NAMESPACE, Settings

AUTOSCALER_NAME = "autoscaler"


# -- names -----------------------------------------------------------------------------------


def executor_name(executor_id: str) -> str:
    return f"executor-{executor_id}"


def warden_name(instance: str, node: str) -> str:
    """One warden per node and farm (farm's id: `JobStore.instance()`)."""
    return f"warden-{instance}-{node}"


def find_actor(name: str) -> Any:
    """The named actor of this farm's namespace, or None when there is none (gone already)."""
    import ray

    try:
        return ray.get_actor(name, namespace=RAY_NAMESPACE)
    except ValueError:
        return None


def find_wardens(instance: str) -> list[Any]:
    """The wardens of this farm on every node of the Ray it runs on."""
    import ray

    prefix = warden_name(instance, "")
    found = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == RAY_NAMESPACE and actor["name"].startswith(prefix):
            handle = find_actor(actor["name"])
            if handle is not None:
                found.append(handle)
    return found


# -- classes ---------------------------------------------------------------------------------


def actor_class(body: type, **options: Any) -> Callable[[], Any]:
    """A function that returns `body` as a Ray actor class with `options`, made on its first
    call. `body` stays a plain class of its module (Ray pickles it by reference), so the
    module imports without Ray."""
    made: list[Any] = []

    def actor() -> Any:
        if not made:
            import ray

            made.append(ray.remote(**options)(body))
        return made[0]

    actor.__doc__ = f"{body.__name__} as a Ray actor class (made on first use, so importing its module needs no Ray)."
    return actor


def restarted() -> bool:
    """Inside an actor: whether Ray restarted it (it died; `max_restarts`)."""
    import ray

    return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def node_here() -> dict[str, str]:
    """Inside an actor: the Ray node that hosts it and that node's address."""
    import ray

    return {"ray_node": ray.get_runtime_context().get_node_id(), "address": ray.util.get_node_ip_address()}


def stop_autoscaler(handle: Any, timeout_s: float) -> list[str]:
    """Stop the autoscaler actor and end it; returns the executors it asked for that were
    not ready yet (AutoscalerActor.stop)."""
    import ray

    launched: list[str] = ray.get(handle.stop.remote(), timeout=timeout_s)
    ray.kill(handle)
    return launched


# -- placement -------------------------------------------------------------------------------


def pinned_here() -> Any:
    """A scheduling strategy that keeps an actor on this process's node (a warden fences
    its own node's attempts), even if that node is busy."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def pool_resources(settings: Settings, pool: str) -> dict[str, float] | None:
    """The custom resources an executor of `pool` takes (its worker group's), if any."""
    return settings.executors.resources(pool) or None


def actor_settings(settings: Settings) -> dict:  # type: ignore[type-arg]
    """Settings as plain data for an actor: the admin token stays behind."""
    return settings.model_dump(mode="json", exclude={"admin_token", "tenants"})


# -- the fleet -------------------------------------------------------------------------------


class Fleet(Protocol):
    """What the autoscaler asks of the executors it sizes. Executors report their states to
    the registry (farm.store.executors) themselves: the fleet is asked, never read."""

    def start(self, pool: str, n: int) -> list[str]:
        """Start `n` executors of `pool`; returns their ids (they report when ready)."""
        ...

    def drain(self, executor_ids: list[str]) -> None:
        """Stop them claiming; each exits once its current job (if any) is done."""
        ...

    def kill(self, executor_ids: list[str]) -> None:
        """End executors that never started (nothing of theirs to drain)."""
        ...

    def request(self, desired: dict[str, int]) -> None:
        """Ask the cluster for room for each pool's desired executors, ahead of them."""
        ...

    def reap(self) -> None:
        """Let go of the executors whose drain has finished."""
        ...


class RayFleet:
    """Starts and drains executor actors. Executors are detached (a restart of the
    autoscaler does not take running jobs down with it) and named, so any process on the
    farm's Ray can find one by its id. `executor_actor` returns the executor's actor class
    (farm.actors.executor_actor)."""

    def __init__(self, settings: Settings, executor_actor: Callable[[], Any]) -> None:
        self.settings = settings
        self.executor_actor = executor_actor
        self._draining: dict[Any, Any] = {}  # drain() ref -> actor handle

    def start(self, pool: str, n: int) -> list[str]:
        plain = actor_settings(self.settings)
        plain["executors"] = {**plain["executors"], "pool": pool}
        ids = []
        for _ in range(n):
            executor_id = f"{pool}-{uuid.uuid4().hex[:10]}"
            handle = self.executor_actor().options(
                name=executor_name(executor_id), namespace=RAY_NAMESPACE, lifetime="detached",
                resources=pool_resources(self.settings, pool),
            ).remote(executor_id, plain)  # fmt: skip
            handle.start.remote()
            ids.append(executor_id)
        return ids

    def drain(self, executor_ids: list[str]) -> None:
        for executor_id in executor_ids:
            handle = find_actor(executor_name(executor_id))
            if handle is not None:  # else gone already
                self._draining[handle.drain.remote(None)] = handle

    def kill(self, executor_ids: list[str]) -> None:
        import ray

        for executor_id in executor_ids:
            handle = find_actor(executor_name(executor_id))
            if handle is not None:  # else gone already
                ray.kill(handle)

    def request(self, desired: dict[str, int]) -> None:
        """Ask Ray's autoscaler (KubeRay) for room for each pool's desired executors, with
        that pool's resources, ahead of the actors that will need it: worker pods boot while
        the decision's executors wait. One request for the whole farm (each replaces the last)."""
        bundles = [r for pool, n in desired.items() if (r := self.settings.executors.resources(pool)) for _ in range(n)]
        if not bundles:
            return  # one machine: nothing to scale
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)

    def reap(self) -> None:
        """Remove the actors whose drain has finished."""
        if not self._draining:
            return
        import ray

        done, _ = ray.wait(list(self._draining), num_returns=len(self._draining), timeout=0)
        for ref in done:
            ray.kill(self._draining.pop(ref))


class StubFleet:
    """A fleet without Ray: records what it is asked; its executors come up when a test
    reports them to the registry, as a real executor does. Ids are `<pool>-<n>`."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.drained: list[str] = []
        self.killed: list[str] = []
        self.requested: list[dict[str, int]] = []

    def start(self, pool: str, n: int) -> list[str]:
        ids = [f"{pool}-{len(self.started) + i}" for i in range(n)]
        self.started += ids
        return ids

    def drain(self, executor_ids: list[str]) -> None:
        self.drained += executor_ids

    def kill(self, executor_ids: list[str]) -> None:
        self.killed += executor_ids

    def request(self, desired: dict[str, int]) -> None:
        self.requested.append(dict(desired))

    def reap(self) -> None: ...
