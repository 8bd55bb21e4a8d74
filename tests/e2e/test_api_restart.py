"""An API replica is killed (SIGKILL) and started again: nothing acknowledged is lost."""

import signal

from farm.store.client import connect
from farm.store.jobs import JobStore
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


def test_several_api_workers_serve_with_the_config_file(farm_env, tmp_path):
    import subprocess
    import sys
    import time

    import httpx
    import yaml

    from farm.store.server import free_port

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    config = tmp_path / "farm.yaml"
    config.write_text(yaml.safe_dump({"policies": {"default": {"kind": "reactive", "buffer": 3}}}))
    port = free_port()
    env = {**farm_env, "FARM_REDIS_URL": url, "FARM_API__PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "api", "--workers", "2", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer e2e-admin-token"})
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "farm api --workers 2 exited"
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "farm api --workers 2 never answered"
            time.sleep(0.2)
        assert client.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}).status_code == 201
        assert client.get("/v1/pools/default/policy").json()["policy"]["buffer"] == 3  # from the config file
    finally:
        proc.terminate()
        proc.wait(30)
        server.stop()
