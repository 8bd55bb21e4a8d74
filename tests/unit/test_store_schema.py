"""The key schema and the Lua scripts' declared edges, checked without a server."""

from farm.models import TRANSITIONS
from farm.store.keys import Keys
from farm.store.lua import NAMES, declared_edges, source


def test_every_key_has_the_prefix_and_templates_cover_every_key():
    k = Keys("x:")
    keys = [k.job("1"), k.log("1"), k.queue("p", "t"), k.waiting("p"), k.wake("p"), k.running("p"), k.tenant_jobs("t"),
            k.stats("p"), k.executors("p"), k.executor("e"), k.leases, k.deadlines, k.finished, k.jobs, k.seq]
    assert all(key.startswith("x:") for key in keys)
    assert len(set(keys)) == len(keys)
    t = k.templates()
    assert t["job"] + "1" == k.job("1") and t["queue"] + "p:t" == k.queue("p", "t") and t["leases"] == k.leases


def test_scripts_never_spell_a_key():
    for name in ("lib", *NAMES):
        assert "farm:" not in source(name), name


def test_scripts_implement_exactly_the_transition_table():
    table = {(src.value, dst.value) for src, dsts in TRANSITIONS.items() for dst in dsts}
    declared = set().union(*(declared_edges(n) for n in NAMES))
    assert declared - {("(new)", "queued")} == table
