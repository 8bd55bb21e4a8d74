"""An API replica is killed (SIGKILL) and started again: nothing acknowledged is lost."""

import signal

from farm.store.jobs import JobStore, connect
from farm.store.server import EmbeddedRedis


def test_restart_of_the_api_process_loses_nothing(start_farm, tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        env = {"FARM_REDIS_URL": url}
        api, client = start_farm("api", env=env)
        ids = [client.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}).json()["id"] for _ in range(30)]
        assert api.stop(signal.SIGKILL) == -signal.SIGKILL
        api, client = start_farm("api", env=env)
        listed = client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
        assert sorted(j["id"] for j in listed) == sorted(ids)
        assert all(j["state"] == "queued" for j in listed)
        assert JobStore(connect(url)).client.zcard("farm:waiting:default") == 30
    finally:
        server.stop()
