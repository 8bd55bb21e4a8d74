"""Redis adapter: key schema, Lua scripts, and the stores built on them."""

from farm.store.executors import ExecutorRegistry, ExecutorState
from farm.store.jobs import Claim, JobStore, connect
from farm.store.keys import Keys

__all__ = ["Claim", "ExecutorRegistry", "ExecutorState", "JobStore", "Keys", "connect"]
