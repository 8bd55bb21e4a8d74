"""Artifacts: collected after the steps, capped, confined to the workspace, served over HTTP."""

import hashlib

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.artifacts import DirectoryStore, safe_name
from farm.errors import InvalidInput
from farm.models import JobSpec, JobState
from tests.integration.test_executor_local import full_log, wait_done

TOKEN = "artifact-admin"


@pytest.fixture
def settings(make_settings):
    return make_settings(admin_token=TOKEN, artifacts={"max_file_bytes": 1000, "max_job_bytes": 1500})


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_artifacts_round_trip(api, settings, run_executor, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("do not ship me")
    run_executor(settings)
    r = api.post("/v1/jobs", json={
        "steps": [{"name": "build", "run":
            "mkdir -p dist/sub reports && printf 'binary' > dist/app.bin && printf 'x' > dist/sub/deep.txt"
            " && head -c 2000 /dev/zero > dist/too-big.bin && echo '<xml/>' > reports/junit.xml"
            f" && ln -s {outside} dist/leak.txt && ln -s {tmp_path} dist/host && mkfifo dist/fifo"}],
        "artifacts": ["dist/**/*", "reports/*.xml", "nothing/*"],
    })
    job_id = r.json()["id"]
    done = wait_done(api.app.state.store, job_id)
    assert done.state is JobState.SUCCEEDED, full_log(api.app.state.store, job_id)
    names = {a.name: a for a in done.artifacts}
    assert set(names) == {"dist/app.bin", "dist/sub/deep.txt", "reports/junit.xml"}
    assert names["dist/app.bin"].size == 6 and names["dist/app.bin"].sha256 == hashlib.sha256(b"binary").hexdigest()
    log = full_log(api.app.state.store, job_id)
    assert "too-big.bin is 2000 bytes, over the 1000-byte cap" in log
    assert "artifact match(es) lead outside the workspace through a link; skipped" in log
    assert "secret.txt" not in log and "leak.txt" not in log  # what is out there is never named
    assert "'nothing/*' matched nothing" in log

    listed = api.get(f"/v1/jobs/{job_id}/artifacts").json()
    assert [a["name"] for a in listed] == sorted(names)
    got = api.get(f"/v1/jobs/{job_id}/artifacts/dist/app.bin")
    assert got.status_code == 200 and got.content == b"binary"
    assert "app.bin" in got.headers["content-disposition"]
    assert api.get(f"/v1/jobs/{job_id}/artifacts/dist/leak.txt").status_code == 404
    assert api.get(f"/v1/jobs/{job_id}/artifacts/dist/../../x").status_code in (404, 422)
    assert api.get(f"/v1/jobs/{job_id}/artifacts/dist%2F..%2F..%2Fsecret.txt").status_code in (404, 422)


def test_artifact_caps_per_job(api, settings, run_executor):
    run_executor(settings)
    r = api.post("/v1/jobs", json={
        "steps": [{"name": "b", "run": "for i in 1 2 3; do head -c 600 /dev/zero > part$i; done"}],
        "artifacts": ["part*"],
    })
    done = wait_done(api.app.state.store, r.json()["id"])
    assert [a.name for a in done.artifacts] == ["part1", "part2"]  # 1200 of a 1500-byte cap


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a\\b", "./a"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(InvalidInput):
        safe_name(name)
    with pytest.raises(InvalidInput):
        DirectoryStore(tmp_path).open("abc", 1, name)


def test_patterns_may_not_leave_the_workspace(api):
    for bad in ["/etc/*", "../*", "a/../../b"]:
        r = api.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}], "artifacts": [bad]})
        assert r.status_code == 422, bad


def test_purge_deletes_artifacts(settings, store, registry, tmp_path):
    from farm.reaper import Reaper

    src = tmp_path / "f"
    src.write_text("data")
    artifacts = DirectoryStore(settings.artifact_dir)
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    artifacts.put(job.id, 1, "f", src)
    store.cancel(job.id)
    store.client.zadd(store.keys.finished, {job.id: 0})
    assert Reaper(store, registry, settings, artifacts).run_once().purged == 1
    assert list(artifacts.jobs()) == []
