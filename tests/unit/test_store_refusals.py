"""A store that is up but refuses writes is StoreUnavailable with its reason (a 503 at the
API, a back-off in the loops), and a degraded farm says why. Pure: redis-py's exception
classes and INFO fields, no server."""

from __future__ import annotations

import pytest
import redis

from farm import loops
from farm.errors import StoreUnavailable
from farm.store.client import store_error, translated
from farm.store.health import reasons

MISCONF = "MISCONF Errors writing to the AOF file: No space left on device"


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (redis.exceptions.ResponseError(MISCONF), "cannot persist writes"),
        (redis.exceptions.ResponseError(f"Error running script (call to f_x): @user_script:1: {MISCONF}"), "cannot persist"),
        (redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."), "read-only replica"),
        (redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."), "maxmemory"),
        (redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory"), "unreachable"),
        (redis.ConnectionError("Connection refused"), "unreachable"),
    ],
)
def test_a_refusing_store_is_unavailable_with_its_reason(error, says):
    mapped = store_error(error)
    assert isinstance(mapped, StoreUnavailable) and says in str(mapped), mapped
    with pytest.raises(StoreUnavailable, match=says):
        with translated():
            raise error


def test_other_redis_errors_are_not_hidden_as_unavailability():
    assert store_error(redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")) is None
    with pytest.raises(redis.exceptions.ResponseError):
        with translated():
            raise redis.exceptions.ResponseError("ERR unknown command")


def test_degraded_reasons_from_info():
    healthy = {"aof_enabled": 1, "aof_last_write_status": "ok", "rdb_last_bgsave_status": "ok", "maxmemory": 0,
               "used_memory": 10, "role": "master"}  # fmt: skip
    assert reasons(healthy) == []
    assert "append-only file" in reasons({**healthy, "aof_last_write_status": "err"})[0]
    assert "snapshot" in reasons({**healthy, "aof_enabled": 0, "rdb_last_bgsave_status": "err"})[0]
    assert "maxmemory" in reasons({**healthy, "maxmemory": 100, "used_memory": 100})[0]
    assert reasons({**healthy, "maxmemory": 100, "used_memory": 99}) == []
    assert "replica" in reasons({**healthy, "role": "slave", "slave_read_only": 1})[0]


def test_a_failing_loop_backs_off_up_to_a_bound_and_never_under_its_interval():
    waits = [loops.backoff(0.5, n) for n in range(1, 12)]
    assert waits == sorted(waits) and waits[0] == 1.0 and waits[-1] == loops.MAX_BACKOFF_S
    assert loops.backoff(60.0, 3) == 60.0  # a slow loop keeps its own interval
