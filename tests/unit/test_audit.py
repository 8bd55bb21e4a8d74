"""The audit record, its stream form and its filters (farm.audit), without a server."""

import hashlib

import pytest

from farm.audit import (
    MAX_TARGETS,
    MAX_TEXT,
    REFUSED,
    AuditFilter,
    AuditRecord,
    action_matches,
    body_digest,
    from_fields,
    parse_since,
    to_fields,
)
from farm.errors import InvalidInput

NOW = 1_800_000_000_000


def test_a_record_is_stored_as_its_non_default_fields_and_read_back_with_the_entry_time():
    r = AuditRecord(actor="t1", name="ci", tenant="alice", role="submitter", client="10.0.0.5", action="job.cancel",
                    targets=["j1"], body_sha256="", status=202, method="POST", path="/v1/jobs/j1/cancel")  # fmt: skip
    fields = to_fields(r)
    assert fields == {"actor": "t1", "name": "ci", "tenant": "alice", "role": "submitter", "client": "10.0.0.5",
                      "action": "job.cancel", "targets": '["j1"]', "status": "202", "method": "POST",
                      "path": "/v1/jobs/j1/cancel"}  # fmt: skip
    back = from_fields("1800000000123-4", fields)
    assert back.model_dump(exclude={"id", "at", "time"}) == r.model_dump(exclude={"id", "at", "time"})
    assert (back.id, back.at, back.time) == ("1800000000123-4", 1800000000123, "2027-01-15T08:00:00.123Z")


def test_a_record_is_cut_to_its_bounds_never_refused():
    r = AuditRecord(action="x" * 1000, status=401, name="n" * 1000, targets=[str(i) for i in range(100)], path="/" * 5000)
    assert len(r.action) == len(r.name) == MAX_TEXT and len(r.targets) == MAX_TARGETS and len(r.path) == 1024
    assert from_fields("1-0", to_fields(r)).targets == r.targets


def test_a_summary_written_by_the_script_reads_as_a_record():
    fields = {"client": "10.0.0.9", "tenant": "", "action": "auth.refused.suppressed", "status": "401", "count": "995",
              "window_ms": "1799999940000"}  # fmt: skip
    r = from_fields("1800000000000-0", fields)
    assert (r.count, r.window_ms, r.status, r.actor) == (995, 1799999940000, 401, "")


def test_the_body_digest_is_empty_without_a_body():
    assert body_digest(b"") == ""
    assert body_digest(b'{"a":1}') == hashlib.sha256(b'{"a":1}').hexdigest()


@pytest.mark.parametrize(("pattern", "action", "matches"), [
    ("job.cancel", "job.cancel", True), ("job.cancel", "job.cancelled", False), ("job.", "job.submit", True),
    ("job.*", "job.rerun", True), ("job.", "jobs.x", False), ("job", "job.submit", False), ("auth.refused", REFUSED, True),
    ("auth.refused", "auth.refused.suppressed", False), ("auth.", "auth.refused.suppressed", True),
])  # fmt: skip
def test_an_action_filter_is_exact_or_an_area(pattern, action, matches):
    assert action_matches(pattern, action) is matches


def test_the_filter_keeps_the_tenant_actor_by_id_or_name_action_and_time():
    r = AuditRecord(id="5-0", at=5000, actor="tok1", name="ci-bot", tenant="alice", action="job.submit", status=201)
    assert AuditFilter().keep(r) and AuditFilter(tenant="alice", actor="tok1", action="job.", since_ms=5000).keep(r)
    assert AuditFilter(actor="ci-bot").keep(r)
    assert not AuditFilter(tenant="bob").keep(r)
    assert not AuditFilter(tenant="").keep(r)  # an unknown token's records (tenant "") are the admin's alone
    assert not AuditFilter(actor="tok2").keep(r)
    assert not AuditFilter(action="run.").keep(r)
    assert not AuditFilter(since_ms=5001).keep(r)
    assert AuditFilter(tenant="alice").narrows and not AuditFilter(since_ms=1).narrows
    # The admin acting on alice's job: alice's maintainer reads it too; nobody else, and never a reader of tenant "".
    on = AuditRecord(actor="admin", tenant="admin", on_tenant="alice", action="job.cancel", status=202)
    assert AuditFilter(tenant="alice").keep(on) and AuditFilter(tenant="admin").keep(on)
    assert not AuditFilter(tenant="bob").keep(on) and not AuditFilter(tenant="").keep(r.model_copy(update={"tenant": "x"}))


@pytest.mark.parametrize(("text", "ms"), [
    ("1h", NOW - 3_600_000), ("30m", NOW - 1_800_000), ("7d", NOW - 7 * 86_400_000), ("2w", NOW - 14 * 86_400_000),
    ("45s", NOW - 45_000), (" 1h ", NOW - 3_600_000), ("2027-01-15T08:00:00Z", 1_800_000_000_000),
    ("2027-01-15T08:00:00", 1_800_000_000_000), ("2027-01-15T09:00:00+01:00", 1_800_000_000_000),
    ("2027-01-15", 1_799_971_200_000),
])  # fmt: skip
def test_since_is_a_time_ago_or_an_iso_time(text, ms):
    assert parse_since(text, now_ms=NOW) == ms


@pytest.mark.parametrize("text", ["", "yesterday", "1y", "-1h", "2027-13-01", "0s"])
def test_a_since_that_is_neither_names_its_field(text):
    with pytest.raises(InvalidInput) as e:
        parse_since(text, now_ms=NOW)
    assert e.value.args[1] == ("query", "since")
    assert "30m" in e.value.args[0]


def test_what_a_caller_put_in_a_path_cannot_drive_a_terminal_or_forge_a_line():
    record = AuditRecord(action="token.revoke", status=403, targets=["\x1b]0;PWNED\x07\x1b[2J", "a\r\nX: y"], name="\u202eevil")
    assert record.targets == ["\\x1b]0;PWNED\\x07\\x1b[2J", "a\\r\\nX: y"]
    assert record.name == "\\u202eevil" and all(t.isprintable() for t in record.targets)
