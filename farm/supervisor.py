"""`farm up`'s supervisor: who notices when a part of the farm dies, and starts it again.

- The embedded server is a process of `farm up`'s: this loop polls it every interval_s and
  starts it again on the same port, with the same password and AOF (every acknowledged job
  is in the AOF; clients retry their connections meanwhile). The lifeline likewise.
- The Ray actors are restarted by Ray (`max_restarts=-1`): the static executors (a restarted
  one starts its loop at once, in the same slot), the warden and the autoscaler. Each
  counts its own restart when it comes back.

Every restart is counted in Redis (`farm_restarts_total{component}` on /metrics, and in
`farm queue`). `run_once()` is one pass, for tests.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from farm import loops
from farm.errors import FarmError
from farm.store.client import connect
from farm.store.nodes import NodeBook

if TYPE_CHECKING:
    from farm.embedded import EmbeddedFarm

log = logging.getLogger("farm.supervisor")


class Supervisor:
    def __init__(self, farm: EmbeddedFarm, *, interval_s: float = 0.5) -> None:
        self.farm = farm
        self.interval_s = interval_s
        self.pending: list[str] = []  # restarts not yet counted (Redis was away)
        self._nodes: NodeBook | None = None

    @property
    def nodes(self) -> NodeBook:
        if self._nodes is None:
            assert self.farm.resolved is not None
            self._nodes = NodeBook(connect(self.farm.resolved.redis_url or ""))
        return self._nodes

    def run_once(self) -> list[str]:
        """One pass: the components restarted in it."""
        restarted = []
        redis = self.farm.redis
        if redis is not None and redis.proc is not None and redis.proc.poll() is not None:
            log.warning("the embedded server exited (%s); starting it again", redis.proc.returncode)
            redis.start()
            restarted.append("redis")
        lifeline = self.farm.lifeline
        if lifeline is not None and lifeline.poll() is not None:
            log.warning("the lifeline exited (%s); starting it again", lifeline.returncode)
            self.farm.start_lifeline()
            restarted.append("lifeline")
        self.pending += restarted
        try:
            while self.pending:
                self.nodes.restarted(self.pending[0])
                self.pending.pop(0)
        except FarmError as e:
            log.warning("restart not counted yet: %s", e)
        return restarted

    def start(self) -> tuple[Any, Any]:
        return loops.start("supervisor", self.run_once, self.interval_s, log)
