"""An API process SIGKILLed while runs are being submitted never leaves half a run: every run
in Redis has all its jobs, and every job of a run belongs to a whole one."""

import json
import signal
import threading
import time

import httpx

from farm.store.client import connect
from farm.store.keys import Keys
from farm.store.server import EmbeddedRedis


def test_a_run_is_all_or_none_when_the_api_is_killed_mid_request(start_farm, tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    keys, redis = Keys(), connect(url)
    # 500 jobs of ~1 KiB: a body of ~600 KB whose one script call takes tens of ms, so kills
    # land before the body is read, while it is validated, and while the script runs.
    body = {"name": "big", "jobs": [{"steps": [{"name": f"s{i}", "run": "echo " + "x" * 1000}]} for i in range(500)]}
    delays = [0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3]  # from before the body is read to after the answer
    answered, cut = 0, 0
    try:
        env = {"FARM_REDIS_URL": url}
        for delay in delays:
            api, client = start_farm("api", env=env)
            outcome: list[object] = []

            def post(client=client, outcome=outcome):
                try:
                    outcome.append(client.post("/v1/runs", json=body, timeout=30).status_code)
                except httpx.TransportError as e:
                    outcome.append(e)

            t = threading.Thread(target=post)
            t.start()
            time.sleep(delay)
            assert api.stop(signal.SIGKILL) == -signal.SIGKILL
            t.join(30)
            answered += outcome == [201]
            cut += isinstance(outcome[0], Exception)
        runs = redis.zrange(keys.runs, 0, -1)
        in_runs = set()
        for run_id in runs:
            h = redis.hgetall(keys.run(run_id))
            ids = json.loads(h["jobs"])
            assert int(h["total"]) == len(ids) == 500
            in_runs.update(ids)
            for job_id in ids:
                assert redis.hget(keys.job(job_id), "run") == run_id
        jobs = set(redis.zrange(keys.jobs, 0, -1))
        assert jobs == in_runs  # no job outside a whole run
        assert len(runs) >= answered  # every acknowledged run is there
        assert cut > 0 and len(runs) < len(delays), "no kill landed inside a request: the test proved nothing"
        # and the farm still serves
        api, client = start_farm("api", env=env)
        assert len(client.get("/v1/runs", params={"limit": 100}).json()["runs"]) == len(runs)
    finally:
        server.stop()
