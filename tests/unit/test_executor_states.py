"""The executor registry's states as the Lua scripts write them, checked without a server.

The registry has no transition table (farm/store/executors.py says why): what must hold is
that every state a script writes or compares is one `ExecutorRegistry.list` can read back.
"""

import re

from farm.store.executors import ExecutorState
from farm.store.lua import NAMES, source

_WRITES = re.compile(r"executor_state\([^,()]+,\s*[^,()]+,\s*'([^']*)'")
_COMPARES = re.compile(r"K\.executor\s*\.\.[^)]*'state'\)\s*[=~]=\s*'([^']*)'")


def _states(pattern: re.Pattern[str]) -> dict[str, set[str]]:
    return {name: set(pattern.findall(source(name))) for name in NAMES}


def test_every_state_a_script_writes_is_an_executor_state():
    writes = _states(_WRITES)
    assert writes["claim"] == {"busy"} and writes["finish"] == {"idle"}  # the pattern still finds them
    assert writes["heartbeat"] == {"busy", "draining"}  # a working executor is renewed, its drain kept
    written = set().union(*writes.values())
    assert written <= {s.value for s in ExecutorState}, written


def test_every_state_a_script_compares_is_an_executor_state():
    compared = set().union(*_states(_COMPARES).values())
    # finish.lua: only a busy executor becomes idle; heartbeat.lua: a draining one stays draining
    assert compared == {"busy", "draining"}
    assert compared <= {s.value for s in ExecutorState}
