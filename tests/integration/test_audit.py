"""The audit trail on a real Redis: records appended (as the gate will, through AuditTrail),
paged newest first with a cursor and filters, trimmed to its retention, refusals
rate-limited per client, exported as JSON lines; who sees what through the API; `farm audit`."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farm.api import create_app
from farm.audit import REFUSED, REFUSED_SUMMARY, AuditRecord
from farm.cli import app as cli
from farm.settings import hash_token
from farm.store import audit as audit_store
from farm.store.audit import AuditTrail
from farm.store.client import connect, connect_async
from farm.store.keys import Keys
from tests.conftest import wait_for

ADMIN, ALICE, BOB = "audit-admin", "audit-alice", "audit-bob"
DAY = 86400


def record(action: str = "job.submit", tenant: str = "alice", **kw: object) -> AuditRecord:
    base = {"actor": f"tok-{tenant}", "name": f"{tenant}-ci", "tenant": tenant, "role": "submitter", "client": "10.0.0.5",
            "action": action, "targets": ["j1"], "status": 201, "method": "POST", "path": "/v1/jobs"}  # fmt: skip
    return AuditRecord.model_validate({**base, **kw})


def trail(redis_url: str, *, retention_s: float = DAY, limit: int = 20, **kw: object) -> AuditTrail:
    return AuditTrail(connect(redis_url), Keys(), retention_s=retention_s, refusals_per_minute=limit, **kw)  # type: ignore[arg-type]


def on_loop(redis_url: str, calls, **kw: object):
    """Run `calls(trail)` on an event loop with an asyncio client of its own, as the gate does."""

    async def main():
        aclient = connect_async(redis_url)
        try:
            return await calls(
                AuditTrail(connect(redis_url), Keys(), aclient=aclient, **{"retention_s": DAY, "refusals_per_minute": 20, **kw})
            )
        finally:
            await aclient.aclose()

    return asyncio.run(main())


def test_records_page_newest_first_with_a_cursor_and_filters(redis_url):
    t = trail(redis_url)
    ids = [t.append_sync(record("job.submit" if i % 2 else "job.cancel", "alice" if i % 3 else "bob", targets=[f"j{i}"]))
           for i in range(30)]  # fmt: skip
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))  # stream ids: (ms, seq), 10 in a ms sort before 2 as text
    page, nxt = t.page(limit=10)
    assert [r.targets[0] for r in page] == [f"j{i}" for i in range(29, 19, -1)] and nxt == page[-1].id
    seen = page
    while nxt is not None:
        page, nxt = t.page(limit=10, cursor=nxt)
        seen += page
    assert [r.id for r in seen] == ids[::-1]
    assert seen[0].at == int(ids[-1].split("-")[0]) and seen[0].actor == "tok-alice" and seen[0].status == 201

    alice, _ = t.page(limit=100, tenant="alice")
    assert {r.tenant for r in alice} == {"alice"} and len(alice) == 20
    cancels, _ = t.page(limit=100, action="job.cancel")
    assert len(cancels) == 15 and {r.action for r in cancels} == {"job.cancel"}
    assert len(t.page(limit=100, action="job.")[0]) == 30 and t.page(limit=100, action="run.")[0] == []
    assert len(t.page(limit=100, actor="bob-ci")[0]) == 10 == len(t.page(limit=100, actor="tok-bob")[0])
    since = int(ids[25].split("-")[0])
    assert {r.id for r in t.page(limit=100, since_ms=since)[0]} >= set(ids[26:])


def test_a_filtered_page_reads_a_bounded_stretch_and_says_where_to_go_on(redis_url, monkeypatch):
    monkeypatch.setattr(audit_store, "SCAN_MAX", 50)
    t = trail(redis_url)
    t.append_sync(record(tenant="bob"))
    for _ in range(120):
        t.append_sync(record(tenant="alice"))
    page, nxt = t.page(limit=10, tenant="bob")
    assert page == [] and nxt is not None  # 50 of alice's read, none of bob's yet: a short page, and a cursor
    found = []
    for _ in range(5):
        page, nxt = t.page(limit=10, tenant="bob", cursor=nxt)
        found += page
        if nxt is None:
            break
    assert [r.tenant for r in found] == ["bob"] and nxt is None


def test_append_on_the_event_loop_is_one_entry(redis_url):
    entry = on_loop(redis_url, lambda t: t.append(record("run.submit", targets=["r1", "j1", "j2"])))
    [r] = trail(redis_url).page(limit=10)[0]
    assert r.id == entry and r.action == "run.submit" and r.targets == ["r1", "j1", "j2"]


def test_the_writer_keeps_the_order_requests_were_answered_in(redis_url):
    """A refusal is written at once and a change's record in a batch a moment later; the
    change answered first still comes first in the trail (a viewer's 403 on a job once
    showed before the submit that made the job, in CI)."""
    from farm.api.recorder import Recorder

    _clear_of_a_minute_turn(redis_url)

    async def answered(t):
        recorder = Recorder(t, delay_s=0.5)  # a batch that would land after the refusal
        await recorder.append(record("job.submit"))
        await recorder.refused(record("job.cancel", role="viewer", status=403))
        await recorder.append(record("job.cancel"))
        await recorder.close()

    on_loop(redis_url, answered)
    got = [(r.action, r.status) for r in reversed(trail(redis_url).page(limit=10)[0])]
    assert got == [("job.submit", 201), ("job.cancel", 403), ("job.cancel", 201)]


def test_records_older_than_the_retention_are_trimmed_and_never_shown(redis_url):
    t = trail(redis_url, retention_s=0.5)
    t.append_sync(record(targets=["old"]))
    time.sleep(0.6)
    t.append_sync(record(targets=["new"]))
    assert [r.targets for r in t.page(limit=10)[0]] == [["new"]]
    assert [r.targets for r in t.export()] == [["new"]]

    client = connect(redis_url)
    for _ in range(300):
        t.append_sync(record())
    assert client.xlen(Keys().audit) >= 300
    later = trail(redis_url, retention_s=3600, clock=lambda: time.time() + 7200)  # two hours on: all of it is past
    later.append_sync(record(targets=["later"]))
    assert client.xlen(Keys().audit) < 150  # MINID ~ drops whole stream nodes of what is past
    assert later.page(limit=10)[0] == []


def _clear_of_a_minute_turn(redis_url):
    """Start a flood test at least 3 s before a minute ends, so its counts are one minute's."""
    seconds, _ = connect(redis_url).time()
    if seconds % 60 > 56:
        time.sleep(61 - seconds % 60)


def test_a_flood_of_refusals_records_the_limit_then_one_summary_with_the_count(redis_url):
    _clear_of_a_minute_turn(redis_url)
    bad = record(REFUSED, "", actor="", name="", role="", client="203.0.113.9", status=401, targets=[], path="/v1/jobs")

    async def flood(t):
        kept = [await t.refused(bad) for _ in range(1000)]
        other = [await t.refused(bad.model_copy(update={"client": "198.51.100.1"})) for _ in range(3)]
        return kept, other

    kept, other = on_loop(redis_url, flood, refusals_per_minute=5)
    assert kept.count(True) == 5 and kept[:5] == [True] * 5 and other == [True] * 3  # another client is not held back
    t = trail(redis_url, limit=5)
    client, keys = connect(redis_url), Keys()
    assert client.xlen(keys.audit) == 8
    # A minute later: the first look at the trail settles the past minute with one summary.
    minute = int(client.hget(keys.audit_refused, ""))
    client.hset(keys.audit_refused, "", str(minute - 1))
    summaries, _ = t.page(limit=10, action=REFUSED_SUMMARY)
    assert [(s.client, s.count, s.status, s.window_ms) for s in summaries] == [("203.0.113.9", 995, 401, (minute - 1) * 60000)]
    assert client.xlen(keys.audit) == 9
    t.settle()
    assert client.xlen(keys.audit) == 9  # settled once


def test_a_flood_from_many_addresses_shares_one_bucket_past_the_cap(redis_url, monkeypatch):
    _clear_of_a_minute_turn(redis_url)
    monkeypatch.setattr(audit_store, "CLIENTS_A_MINUTE", 10)
    bad = record(REFUSED, "", actor="", status=401)

    async def flood(t):
        return [await t.refused(bad.model_copy(update={"client": f"2001:db8::{i:x}"})) for i in range(200)]

    kept = on_loop(redis_url, flood, refusals_per_minute=2)
    assert kept.count(True) == 10 + 2  # ten clients' first, then two of every newcomer together
    assert connect(redis_url).hlen(Keys().audit_refused) <= 10 + 2


def test_the_export_is_every_match_oldest_first_in_batches(redis_url, monkeypatch):
    monkeypatch.setattr(audit_store, "EXPORT_BATCH", 7)
    t = trail(redis_url)
    ids = [t.append_sync(record(tenant="alice" if i % 2 else "bob")) for i in range(40)]
    assert [r.id for r in t.export()] == ids
    assert [r.id for r in t.export(tenant="alice")] == ids[1::2]
    assert list(t.export(action="run.")) == []


@pytest.fixture
def api(make_settings):
    settings = make_settings(admin_token=ADMIN, tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)},
                                                         {"name": "bob", "token_sha256": hash_token(BOB)}])  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed(api) -> list[str]:
    t = api.app.state.audit
    return [t.append_sync(record(action, tenant)) for action, tenant in
            [("job.submit", "alice"), ("job.cancel", "bob"), ("job.rerun", "alice"), (REFUSED, ""), ("cache.delete", "alice")]]  # fmt: skip


def test_the_admin_reads_every_record_and_a_maintainer_its_tenants(api):
    ids = seed(api)
    r = api.get("/v1/audit", headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["records"]] == ids[::-1] and r.json()["next_cursor"] is None
    first = r.json()["records"][0]
    assert first["time"].endswith("Z") and first["at"] == int(ids[-1].split("-")[0]) and first["targets"] == ["j1"]
    assert [x["id"] for x in api.get("/v1/audit?tenant=bob", headers=auth(ADMIN)).json()["records"]] == [ids[1]]

    mine = api.get("/v1/audit", headers=auth(ALICE)).json()["records"]
    assert [x["id"] for x in mine] == [ids[4], ids[2], ids[0]]  # not bob's, not the unknown token's
    page = api.get("/v1/audit?limit=2&action=job.", headers=auth(ALICE)).json()
    assert [x["action"] for x in page["records"]] == ["job.rerun", "job.submit"]
    rest = api.get(f"/v1/audit?limit=2&action=job.&cursor={page['next_cursor']}", headers=auth(ALICE)).json()
    assert rest == {"records": [], "next_cursor": None}
    assert api.get("/v1/audit?since=1h&actor=alice-ci", headers=auth(ALICE)).json()["records"] == mine
    assert api.get("/v1/audit?since=2100-01-01T00:00:00Z", headers=auth(ADMIN)).json()["records"] == []

    lines = api.get("/v1/audit?format=jsonl&limit=1", headers=auth(ALICE))
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["id"] for line in lines.text.splitlines()] == [ids[0], ids[2], ids[4]]
    every = api.get("/v1/audit?format=jsonl&action=auth.refused", headers=auth(ADMIN)).text.splitlines()
    assert [json.loads(line)["id"] for line in every] == [ids[3]]

    bad = api.get("/v1/audit?since=last-tuesday", headers=auth(ADMIN))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "since"]
    assert api.get("/v1/audit?cursor=nope", headers=auth(ADMIN)).status_code == 422
    assert api.get("/v1/audit?cursor=0-0", headers=auth(ADMIN)).json() == {"records": [], "next_cursor": None}
    assert api.get("/v1/audit?tenant=bob", headers=auth(ALICE)).status_code == 403
    assert api.get("/v1/audit?format=jsonl&tenant=bob", headers=auth(ALICE)).status_code == 403
    assert api.get("/v1/audit?format=csv", headers=auth(ADMIN)).status_code == 422


def test_the_admin_acting_on_a_tenants_job_or_token_shows_in_that_tenants_trail(api):
    job = api.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}, headers=auth(ALICE)).json()
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(ADMIN)).status_code == 202
    token = api.post("/v1/tokens", json={"tenant": "alice", "role": "viewer", "name": "given"}, headers=auth(ADMIN)).json()

    def alices(action: str) -> list[dict]:
        return [x for x in api.get("/v1/audit", params={"action": action}, headers=auth(ALICE)).json()["records"] if x["tenant"] == "admin"]

    (cancel,) = wait_for(lambda: alices("job.cancel"), 10, what="the admin's cancel in alice's trail")
    assert (cancel["on_tenant"], cancel["targets"], cancel["status"]) == ("alice", [job["id"]], 202)
    (made,) = wait_for(lambda: alices("token.create"), 10, what="the admin's token for alice in alice's trail")
    assert made["on_tenant"] == "alice" and made["targets"] == [token["id"]]
    again = api.post(f"/v1/jobs/{job['id']}/rerun", headers=auth(ADMIN)).json()  # the new job is the admin's own
    (rerun,) = wait_for(lambda: alices("job.rerun"), 10, what="the admin's rerun of alice's job in alice's trail")
    assert rerun["on_tenant"] == "alice" and rerun["targets"] == [job["id"], again["id"]] and again["tenant"] == "admin"
    assert api.delete("/v1/caches/deps", params={"tenant": "alice"}, headers=auth(ADMIN)).status_code == 404  # none: tried all the same
    (tried,) = wait_for(lambda: alices("cache.delete"), 10, what="the admin's cache delete for alice in alice's trail")
    assert (tried["on_tenant"], tried["status"]) == ("alice", 404)
    assert api.get("/v1/audit", params={"action": "job.cancel"}, headers=auth(BOB)).json()["records"] == []  # not bob's
    own = wait_for(lambda: api.get("/v1/audit", params={"action": "job.submit"}, headers=auth(ALICE)).json()["records"], 10)
    assert own[0]["on_tenant"] == "" and own[0]["tenant"] == "alice"  # its own act: no on_tenant


def test_the_api_has_no_route_that_changes_the_trail(api):
    for route in api.app.routes:
        if getattr(route, "path", "").startswith("/v1/audit"):
            assert route.methods <= {"GET", "HEAD"}, route.path


def test_farm_audit_lists_filters_and_exports_json_lines(api, serve_app):
    ids = seed(api)
    served = serve_app(api.app)
    env = {"FARM_URL": served.url, "FARM_TOKEN": ADMIN, "COLUMNS": "200"}
    r = CliRunner().invoke(cli, ["audit", "--action", "job.", "--since", "1h"], env=env)
    assert r.exit_code == 0, r.output
    assert "job.rerun" in r.stdout and "job.cancel" in r.stdout and "cache.delete" not in r.stdout and REFUSED not in r.stdout
    assert r.stdout.index("job.rerun") < r.stdout.index("job.submit")  # newest first
    r = CliRunner().invoke(cli, ["audit", "--limit", "2", "--json"], env=env)
    assert [x["id"] for x in json.loads(r.stdout)["records"]] == [ids[4], ids[3]]
    r = CliRunner().invoke(cli, ["audit", "--jsonl", "--tenant", "alice"], env=env)
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [ids[0], ids[2], ids[4]]
    r = CliRunner().invoke(cli, ["audit", "--since", "someday"], env=env)
    assert r.exit_code == 2 and "since" in r.stderr
