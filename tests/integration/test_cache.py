"""The dependency cache on real Redis and a real directory: keys and fallback, trust tiers
(a property test), atomic concurrent saves, interrupted saves, corruption, refusals and
eviction with the protected reserve."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.cache import archive
from farm.cache.archive import Limits, UnsafeEntry
from farm.cache.blobs import CorruptBlob, DirectoryBlobStore
from farm.cache.scope import Scope, Tier, render
from farm.store.cache_index import CacheIndex

P, U = Tier.PROTECTED, Tier.UNPROTECTED


def scope(tier=U, ref="pr-1", tenant="t", repo="https://git.example/r.git"):
    return Scope(tenant, repo, tier, ref)


@pytest.fixture
def index(store, tmp_path):
    return CacheIndex(store.client, DirectoryBlobStore(tmp_path / "blobs"), store.keys)


def tree(root, files):
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    return root


def read_tree(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            full = os.path.join(dirpath, n)
            out[os.path.relpath(full, root)] = open(full, "rb").read()
    return out


def put(index, tmp_path, sc, key, files, name="src"):
    root = tree(tmp_path / name, files)
    saved = archive.save(root, ["deps"], index.blobs)
    return index.commit(sc, key, saved)


def test_a_saved_tree_restores_byte_for_byte_with_modes_and_links(index, tmp_path):
    src = tree(tmp_path / "src", {"deps/a.txt": b"a" * 1000, "deps/sub/b.bin": os.urandom(70_000), "deps/empty": b""})
    os.chmod(src / "deps/sub/b.bin", 0o755)
    os.symlink("sub/b.bin", src / "deps/link")
    (src / "deps/emptydir").mkdir()
    saved = archive.save(src, ["deps", "missing"], index.blobs)
    assert saved.files == 3 and saved.bytes == 71_000
    made, _ = index.commit(scope(), "k1", saved)
    assert made
    match = index.lookup(scope(), "k1", [])
    assert match.exact and match.key == "k1"
    dst = tmp_path / "dst"
    dst.mkdir()
    done = archive.restore(dst, match.manifest, index.blobs)
    assert done.bytes == 71_000
    assert read_tree(dst / "deps") == read_tree(src / "deps")
    assert os.readlink(dst / "deps/link") == "sub/b.bin"
    assert (dst / "deps/sub/b.bin").stat().st_mode & 0o777 == 0o755
    assert (dst / "deps/emptydir").is_dir()


def test_restore_keys_fall_back_to_the_newest_prefix_match(index, tmp_path):
    put(index, tmp_path, scope(), "deps-linux-aaa", {"deps/v": b"old"}, "one")
    put(index, tmp_path, scope(), "deps-linux-bbb", {"deps/v": b"new"}, "two")
    put(index, tmp_path, scope(), "deps-mac-ccc", {"deps/v": b"mac"}, "three")
    m = index.lookup(scope(), "deps-linux-zzz", ["deps-linux-", "deps-"])
    assert not m.exact and m.key == "deps-linux-bbb"
    assert index.lookup(scope(), "other", ["nope-"]) is None


def test_key_templates_hash_files_and_read_env():
    seen = []

    def hash_files(paths):
        seen.append(paths)
        return "h4sh"

    key = render("deps-{{ hashFiles('poetry.lock', 'requirements*.txt') }}-{{ env.PY }}", env={"PY": "3.12"}, hash_files=hash_files)
    assert key == "deps-h4sh-3.12" and seen == [["poetry.lock", "requirements*.txt"]]
    with pytest.raises(Exception, match="unknown expression"):
        render("{{ secrets.X }}", env={}, hash_files=hash_files)


def test_a_protected_job_reads_its_own_ref_then_the_protected_tier_never_an_unprotected_one(index, tmp_path):
    put(index, tmp_path, scope(P, "main"), "deps-1", {"deps/v": b"main"}, "a")
    put(index, tmp_path, scope(U, "main"), "deps-2", {"deps/v": b"pr claiming main"}, "b")
    put(index, tmp_path, scope(U, "pr-7"), "deps-3", {"deps/v": b"pr-7"}, "c")
    release = scope(P, "release")
    assert index.lookup(release, "deps-2", ["deps-"]).key == "deps-1"  # not the unprotected "main"
    assert index.lookup(release, "deps-3", []) is None
    pr = scope(U, "pr-8")
    assert index.lookup(pr, "deps-3", ["deps-"]).key == "deps-1"  # another PR's entry is never read
    assert index.lookup(scope(U, "pr-7"), "deps-3", []).key == "deps-3"  # its own is


SCOPES = [scope(t, r) for t in (P, U) for r in ("main", "rel", "pr-1", "pr-2")] + [scope(P, "main", repo="other")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(st.tuples(st.sampled_from(SCOPES), st.sampled_from(["k-a", "k-b", "kk", "k-ab"])), min_size=1, max_size=8),
    reader=st.sampled_from(SCOPES),
    key=st.sampled_from(["k-a", "k-b", "kk", "k-ab", "x"]),
    prefixes=st.lists(st.sampled_from(["k", "k-", "kk", "x"]), max_size=3),
)
def test_property_nothing_from_a_lower_tier_or_another_unprotected_ref_is_ever_restored(index, writes, reader, key, prefixes):
    index.client.flushall()
    written = {}
    for sc, k in writes:
        saved = archive.Saved(manifest="0" * 64, blobs=[], bytes=1, files=1)
        made, entry_id = index.commit(sc, k, saved)
        if made:
            written[entry_id] = sc
    m = index.lookup(reader, key, prefixes)
    if m is not None:
        entry = written[m.entry_id]
        assert reader.may_read(entry)
        assert not (reader.tier is P and entry.tier is U)  # never from a lower tier
        assert entry.tier is P or entry == reader  # never another unprotected ref


def test_two_jobs_saving_one_key_one_wins_and_the_entry_is_whole(index, tmp_path):
    roots = [tree(tmp_path / f"s{i}", {f"deps/f{j}": os.urandom(5000) for j in range(50)}) for i in range(2)]
    outcomes = []

    def save(root):
        saved = archive.save(root, ["deps"], index.blobs)
        made, _ = index.commit(scope(), "same", saved)
        if not made:
            index.release(saved.blobs)
        outcomes.append(made)

    threads = [threading.Thread(target=save, args=(r,)) for r in roots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False, True]
    dst = tmp_path / "dst"
    dst.mkdir()
    archive.restore(dst, index.lookup(scope(), "same", []).manifest, index.blobs)
    assert read_tree(dst / "deps") in (read_tree(roots[0] / "deps"), read_tree(roots[1] / "deps"))
    # The loser's blobs are gone: only the winner's entry is on disk.
    on_disk = {p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()}
    assert on_disk == set(index.client.hkeys(index.keys.cache_refs))


def test_an_interrupted_save_leaves_nothing_to_restore(index, tmp_path):
    root = tree(tmp_path / "src", {"deps/a": b"x" * 100})
    archive.save(root, ["deps"], index.blobs)  # blobs written, then the executor died: no commit
    assert index.lookup(scope(), "k", ["k"]) is None


def test_a_corrupt_pack_is_detected_on_restore(index, tmp_path):
    root = tree(tmp_path / "src", {"deps/a": os.urandom(10_000)})
    saved = archive.save(root, ["deps"], index.blobs)
    pack = next(b for b in saved.blobs if b != saved.manifest)
    path = tmp_path / "blobs" / pack[:2] / pack
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(CorruptBlob, match="corrupt"):
        archive.restore(dst, saved.manifest, index.blobs)


@pytest.mark.parametrize("bad", ["/etc", "../up", "a/../../b", ""])
def test_unsafe_paths_are_refused(bad, index, tmp_path):
    with pytest.raises(UnsafeEntry, match="relative"):
        archive.save(tmp_path, [bad], index.blobs)


def test_links_outside_devices_and_oversized_trees_are_refused(index, tmp_path):
    root = tmp_path / "ws"
    (root / "deps").mkdir(parents=True)
    os.symlink("/etc/passwd", root / "deps/out")
    with pytest.raises(UnsafeEntry, match="links outside"):
        archive.save(root, ["deps"], index.blobs)
    os.unlink(root / "deps/out")
    os.symlink("../../x", root / "deps/up")
    with pytest.raises(UnsafeEntry, match="links outside"):
        archive.save(root, ["deps"], index.blobs)
    os.unlink(root / "deps/up")
    os.mkfifo(root / "deps/fifo")
    with pytest.raises(UnsafeEntry, match="device, FIFO or socket"):
        archive.save(root, ["deps"], index.blobs)
    os.unlink(root / "deps/fifo")
    (root / "deps/big").write_bytes(b"x" * 5000)
    with pytest.raises(UnsafeEntry, match="size limit"):
        archive.save(root, ["deps"], index.blobs, limits=Limits(max_bytes=4000))
    # An entry that expands past the restoring side's limit is refused before anything is written.
    saved = archive.save(root, ["deps"], index.blobs)
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(UnsafeEntry, match="over the limit"):
        archive.restore(dst, saved.manifest, index.blobs, limits=Limits(max_bytes=4000))
    assert not (dst / "deps").exists()


def test_restore_never_writes_through_a_link_planted_in_the_workspace(index, tmp_path):
    root = tree(tmp_path / "src", {"deps/a": b"payload"})
    saved = archive.save(root, ["deps"], index.blobs)
    outside = tmp_path / "outside"
    outside.mkdir()
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(outside, ws / "deps")  # e.g. committed to the repository being built
    with pytest.raises(UnsafeEntry, match="outside"):
        archive.restore(ws, saved.manifest, index.blobs)
    assert list(outside.iterdir()) == []


def test_eviction_takes_the_least_recently_used_but_keeps_the_protected_reserve(index, tmp_path):
    def entry(sc, key, size):
        root = tree(tmp_path / key, {"deps/f": os.urandom(size)})
        made, entry_id = index.commit(sc, key, archive.save(root, ["deps"], index.blobs))
        assert made
        return entry_id

    main = entry(scope(P, "main"), "main-1", 3000)
    prs = [entry(scope(U, f"pr-{i}"), f"pr-{i}", 3000) for i in range(3)]
    index.lookup(scope(U, "pr-0"), "pr-0", [])  # pr-0 used last; main is now the oldest
    # Quota 9000 with 3000 reserved for the protected tier: main stays, the oldest PR goes.
    dropped = index.evict("t", quota=9000, reserved=3000)
    assert dropped == [prs[1]]
    assert {e.id for e in index.entries("t")} == {main, prs[0], prs[2]}
    # Without a reserve the least recently used goes, protected or not.
    assert index.evict("t", quota=6000, reserved=0) == [main]
    assert index.bytes_used("t") == {"unprotected": 6000, "protected": 0}
    on_disk = {p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()}
    assert on_disk == set(index.client.hkeys(index.keys.cache_refs))


@pytest.mark.parametrize("overlay", [True, False], ids=["overlay", "unpacked"])
def test_a_job_saves_its_cache_and_the_next_job_restores_it(store, make_settings, run_executor, overlay):
    from farm.models import JobSpec, JobState
    from tests.integration.test_executor_local import full_log, wait_done

    run_executor(make_settings(cache={"overlay": overlay}))
    cache = {"key": "deps-{{ hashFiles('lock') }}-{{ env.V }}", "restore_keys": ["deps-"], "paths": ["deps"]}
    make = "echo pinned > lock; [ -d deps ] && echo restored-$(cat deps/pkg) || { mkdir deps; echo v1 > deps/pkg; echo built; }"
    spec = JobSpec(steps=[{"name": "s", "run": make}], env={"V": "1"}, caches=[cache])
    first = wait_done(store, store.enqueue(spec, "t").id)
    assert first.state is JobState.SUCCEEDED and "built" in full_log(store, first.id)
    (c,) = first.caches
    assert c.restore == "miss" and c.save == "saved" and c.key.startswith("deps-") and c.key.endswith("-1")
    second = wait_done(store, store.enqueue(spec, "t").id)
    assert "restored-v1" in full_log(store, second.id)
    (c2,) = second.caches
    # The lock is written by the step, so hashFiles('lock') saw no file before the first
    # step of either job: the same key, an exact hit, and nothing to save again.
    assert (c2.restore, c2.save, c2.restore_bytes) == ("hit", "exists", 3)
    failing = JobSpec(steps=[{"name": "s", "run": "exit 3"}], env={"V": "2"}, caches=[cache])
    third = wait_done(store, store.enqueue(failing, "t").id)
    assert third.caches[0].restore == "partial" and third.caches[0].save == "skipped"  # on_success only
    assert [j.caches[0].warm for j in (second, third)] == ([False, True] if overlay else [False, False])


def test_a_job_writing_to_a_warm_restore_cannot_change_what_the_next_job_restores(store, make_settings, run_executor):
    from agents.cache import overlays_possible
    from farm.models import JobSpec
    from tests.conftest import require
    from tests.integration.test_executor_local import full_log, wait_done

    require("root", overlays_possible(), "overlay mounts")
    settings = make_settings()
    run_executor(settings)
    cache = {"key": "venv", "paths": ["venv"], "save": "always"}
    seed = JobSpec(steps=[{"name": "s", "run": "mkdir -p venv/lib; echo good > venv/lib/mod.py"}], caches=[cache])
    wait_done(store, store.enqueue(seed, "t").id)
    vandal = "cat venv/lib/mod.py; echo evil > venv/lib/mod.py; rm -rf venv/lib; mkdir venv/lib; echo evil > venv/lib/new"
    first = wait_done(store, store.enqueue(JobSpec(steps=[{"name": "s", "run": vandal}], caches=[cache]), "t").id)
    assert "good" in full_log(store, first.id)
    check = JobSpec(steps=[{"name": "s", "run": "cat venv/lib/mod.py; ls venv/lib"}], caches=[cache])
    second = wait_done(store, store.enqueue(check, "t").id)
    log = full_log(store, second.id)
    assert "good" in log and "evil" not in log and "new" not in log and second.caches[0].warm
    # No overlay outlives its attempt (which ends with its clean-up, just after its finish).
    from tests.conftest import wait_for

    wait_for(lambda: not [line for line in open("/proc/self/mounts") if str(settings.data_dir) in line], 10,
             what="the attempt's overlays to be unmounted")  # fmt: skip


def test_cache_outcomes_are_counted_for_metrics(store, make_settings, run_executor):
    from fastapi.testclient import TestClient

    from farm.api import create_app
    from farm.models import JobSpec
    from tests.integration.test_executor_local import wait_done

    settings = make_settings()
    run_executor(settings)
    spec = JobSpec(steps=[{"name": "s", "run": "mkdir -p d; echo x > d/f"}], caches=[{"key": "k", "paths": ["d"]}])
    for _ in range(2):
        wait_done(store, store.enqueue(spec, "t").id)
    with TestClient(create_app(settings)) as api:
        text = api.get("/metrics").text
    assert 'farm_cache_restores_total{outcome="miss",pool="default"} 1.0' in text
    assert 'farm_cache_restores_total{outcome="hit",pool="default"} 1.0' in text
    assert 'farm_cache_saves_total{outcome="saved",pool="default"} 1.0' in text
    assert 'farm_cache_bytes_total{direction="restore",pool="default"} 2.0' in text
    assert 'farm_cache_restore_seconds_total{pool="default"}' in text


def test_a_chain_of_links_that_climbs_out_is_refused_at_save(index, tmp_path):
    """Each link looks inside on its own (`l -> .`, `u1 -> l/..`, `u2 -> u1/..`); followed
    through the others, u2 is the workspace's parent. Found by a red-team run: restored as
    root, such a chain read /etc/shadow and wrote into farm's venv."""
    root = tmp_path / "ws"
    (root / "deps").mkdir(parents=True)
    os.symlink(".", root / "deps/l")
    os.symlink("l/..", root / "deps/u1")
    saved = archive.save(root, ["deps"], index.blobs)  # u1 is the workspace itself: inside
    assert saved is not None
    for i in range(2, 6):
        os.symlink(f"u{i - 1}/..", root / f"deps/u{i}")
    with pytest.raises(UnsafeEntry, match="u2 links outside the workspace"):
        archive.save(root, ["deps"], index.blobs)


@pytest.mark.parametrize("overlay", [False, True])
def test_a_restore_never_goes_through_a_link_a_checkout_planted(store, make_settings, run_executor, overlay, tmp_path):
    """A repository may hold a link to any absolute path; a cache restored under it must not
    follow it (farm restores as root): not the files, not their directories, not a mount."""
    import subprocess

    from farm.models import JobSpec, JobState
    from tests.integration.test_executor_local import full_log, wait_done

    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "repo"
    source = {"git": {"url": str(repo), "ref": "main"}}

    def commit(path: str, message: str) -> None:
        subprocess.run(["git", "-C", str(repo), "add", path], check=True)
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], check=True)

    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README").write_text("app\n")
    commit("README", "first")
    run_executor(make_settings(cache={"overlay": overlay}))
    seed = JobSpec(source=source, steps=[{"name": "s", "run": "mkdir -p x/sub; echo payload > x/sub/file; echo top > x/top"}],
                   caches=[{"key": "payload", "paths": ["x/sub", "x/top"]}])  # fmt: skip
    assert wait_done(store, store.enqueue(seed, "t").id).caches[0].save == "saved"
    os.symlink(str(outside), repo / "x")  # the next commit of the same ref plants a link
    commit("x", "link")
    for _ in range(2):  # the first unpacks on this node, the second would mount the node's copy
        planted = JobSpec(source=source, steps=[{"name": "s", "run": "true"}],
                          caches=[{"key": "payload", "paths": ["x/sub", "x/top"], "save": "never"}])  # fmt: skip
        done = wait_done(store, store.enqueue(planted, "t").id)
        assert done.state is JobState.SUCCEEDED, full_log(store, done.id)
        assert done.caches[0].restore == "error" and "leads outside" in done.caches[0].error, full_log(store, done.id)
        assert list(outside.iterdir()) == []  # nothing written, made or mounted there
    assert not [line for line in open("/proc/self/mounts") if str(outside) in line]
