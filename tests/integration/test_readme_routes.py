"""Every route README.md names is served: each `METHOD /path` in it (and each bare `/v1/...`
path) is called on the app, with path values that exist (a job with an artifact, a run, a
pool, a cache entry) and a body where one is needed, and answers neither 404 nor 405. A
wrong path in the README (as `/v1/pools/{name}/policy/decisions` was) fails here."""

import re
import time

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.cache import archive
from farm.cache.scope import Scope, Tier
from farm.models import JobState, StepResult
from farm.notify import SubscriptionSpec
from farm.roles import Role
from tests.unit.policy_tables import README

ADMIN = "readme-admin"
METHODS = "GET|POST|PUT|PATCH|DELETE"
BODIES = {
    ("POST", "/v1/jobs"): {"steps": [{"name": "s", "run": "true"}]},
    ("POST", "/v1/runs"): {"name": "readme", "jobs": [{"steps": [{"name": "s", "run": "true"}]}]},
    ("PUT", "/v1/pools/{name}/policy"): {"kind": "reactive", "buffer": 1},
    ("POST", "/v1/pools/{name}/policy/seed"): {},  # a 422 for the missing hours is fine: the route is there
}


def _expand(path: str) -> list[str]:
    """`/v1/jobs/{id}/artifacts[/{name}]` -> both; a query (`?state=`, `[?follow=true]`) is dropped."""
    path = re.sub(r"\[[?&][^\]]*\]", "", path).split("?")[0]
    m = re.search(r"\[([^\]]*)\]", path)
    if not m:
        return [path]
    return _expand(path[: m.start()] + path[m.end():]) + _expand(path[: m.start()] + m[1] + path[m.end():])


def readme_routes() -> tuple[set[tuple[str, str]], set[str]]:
    """(method, path) pairs, and paths named without a method."""
    text = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.S | re.M)  # code blocks: commands, not prose
    text = re.sub(rf"`((?:{METHODS})(?:`/`(?:{METHODS}))+) ", lambda m: "`" + m[1].replace("`/`", "/") + " ", text)  # `GET`/`PUT /p`
    routes, bare = set(), set()
    for span in (" ".join(s.split()) for s in re.findall(r"`([^`]+)`", text)):
        if m := re.fullmatch(rf"((?:{METHODS})(?:/(?:{METHODS}))*) (/\S*)", span):
            routes |= {(method, p) for method in m[1].split("/") for p in _expand(m[2])}
        elif re.fullmatch(r"(\.\.\.)?/v1/\S*", span):
            bare |= set(_expand(span))
    return routes, bare


def test_the_readme_names_routes_in_full():
    routes, bare = readme_routes()
    assert len(routes) >= 20 and ("GET", "/v1/pools/{name}/decisions") in routes
    assert not [p for p in bare if p.startswith("...")], "a route written as `.../x` cannot be checked: write it in full"


@pytest.fixture
def api(make_settings, tmp_path):
    settings = make_settings(admin_token=ADMIN)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        yield client


def existing(api, tmp_path) -> dict[str, str]:
    """A finished job with an artifact, a run, a cache entry: values for the README's paths."""
    state = api.app.state
    job = api.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}).json()
    claim = state.store.claim("default", "ex-readme", lease_s=30, grace_s=5)
    (tmp_path / "app.bin").write_bytes(b"binary")
    info = state.artifacts.put(job["id"], claim.attempt, "dist/app.bin", tmp_path / "app.bin")
    assert state.store.finish(job["id"], claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None,
                              steps=[StepResult(name="s", exit_code=0, duration_s=0.1)], artifacts=[info]) == "ok"  # fmt: skip
    run = api.post("/v1/runs", json=BODIES[("POST", "/v1/runs")]).json()
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "f").write_bytes(b"x" * 10)
    state.caches.commit(Scope("admin", "-", Tier.PROTECTED, "-"), "deps-1", archive.save(tmp_path, ["deps"], state.caches.blobs))
    sub = state.notify.add("admin", SubscriptionSpec(on=["failed"], email=["ci@example.com"]), by="readme", most=50)
    state.accounts.create_tenant("readme-team", by="readme")
    token, _ = state.accounts.create_token("readme-team", Role.VIEWER, "readme", by="readme")
    time.sleep(0.005)
    return {"tenant": "readme-team", "token": token["id"], "job": job["id"], "run": run["id"], "pool": "default", "artifact": "dist/app.bin", "key": "deps-1", "sub": sub.id}


def concrete(path: str, values: dict[str, str]) -> str:
    path = path.replace("/v1/runs/{id}", "/v1/runs/" + values["run"]).replace("/v1/notifications/{id}", "/v1/notifications/" + values["sub"])
    path = path.replace("/v1/tokens/{id}", "/v1/tokens/" + values["token"]).replace("/v1/tenants/{name}", "/v1/tenants/" + values["tenant"])
    path = path.replace("{id}", values["job"])
    return path.replace("{name}", values["artifact"] if "/artifacts/" in path else values["pool"]).replace("{key}", values["key"])


def test_every_route_the_readme_names_is_served(api, tmp_path):
    routes, bare = readme_routes()
    values = existing(api, tmp_path)
    answers = {}
    for method, path in sorted(routes, key=lambda r: (r[0] == "DELETE", r)):  # deletes last: they remove what others read
        r = api.request(method, concrete(path, values), json=BODIES.get((method, path)))
        answers[f"{method} {path}"] = r.status_code
    for path in sorted(bare):
        answers[f"(any method) {path}"] = api.get(concrete(path, values)).status_code
    wrong = {route: code for route, code in answers.items() if code in (404, 405) and not route.startswith("(any method)")}
    missing = {route: code for route, code in answers.items() if code == 404}
    assert not wrong and not missing, (wrong, missing, answers)
