"""Pure parts of the image runtimes: which images a Dockerfile starts from, how a build's
cache is scoped (tenant and tier) and which of its images are kept as that scope's cache,
and how a pool's layer stores are leased per scope (file locks, no Docker)."""

import os
import time

from agents.runtimes.docker import LayerScope, StageEnds, from_images
from agents.runtimes.layerstores import LayerStores

A, A_PROTECTED, B = LayerScope("a", "unprotected"), LayerScope("a", "protected"), LayerScope("b", "unprotected")


def test_from_images_names_base_images_not_stages_or_scratch():
    dockerfile = (
        "# syntax comment\n"
        "ARG BASE=farm/debian:bookworm\n"
        "ARG TAG\n"
        "FROM ${BASE} AS build\n"
        "RUN make \\\n  all\n"
        "FROM build AS test\n"
        "FROM --platform=linux/amd64 farm/busybox:$TAG\n"
        "FROM scratch\n"
        "COPY --from=build /out /\n"
        "FROM farm/debian:bookworm\n"
        "FROM $UNDECLARED\n"
    )
    assert from_images(dockerfile, {"TAG": "1"}) == ["farm/debian:bookworm", "farm/busybox:1"]
    assert from_images(dockerfile, {"BASE": "other/base:2", "TAG": "1"})[0] == "other/base:2"


def test_each_tenant_and_tier_has_a_cache_repository_of_its_own():
    repos = {s.cache_repo for s in (A, A_PROTECTED, B, LayerScope("A", "unprotected"), LayerScope("a/b c", "protected"))}
    assert len(repos) == 5
    for repo in repos:  # a valid repository name whatever the tenant's name
        assert repo.startswith(("farm-cache/unprotected-", "farm-cache/protected-")) and repo == repo.lower() and " " not in repo


def test_the_last_image_of_each_earlier_stage_is_kept_as_cache():
    out = StageEnds()
    for chunk in [
        "Step 1/7 : FROM farm/busybox:latest AS build\n", " ---> 9e8895d728e4\n",
        "Step 2/7 : RUN make\n", " ---> Running in bd92ccf61f9d\n", "built\n",
        "Removing intermediate container bd92ccf61f9d\n", " ---> 77d81e753bef\n",
        "Step 3/7 : from farm/busybox:latest AS only-a-base\n", " ---> 9e8895d728e4\n",  # built nothing of its own
        "Step 4/7 : FROM farm/busybox:latest AS test\n", " ---> 9e8895d728e4\n",
        "Step 5/7 : COPY --from=build /out /out\n", " ---> Using cache\n", " ---> 814740c466f8\n",
        "Step 6/7 : FROM farm/busybox:latest\n", " ---> 9e8895d728e4\n",
        "Step 7/7 : RUN true\n", " ---> Running in ad2f774a6bb7\n", " ---> 335f667347be\n",
        "Successfully built 335f667347be\n",
    ]:  # fmt: skip
        out.feed(chunk)
    assert out.ends == ["77d81e753bef", "814740c466f8"]  # the last stage's image is the build's own


def test_a_scope_leases_its_own_stores_the_warmest_first(tmp_path):
    stores = LayerStores(tmp_path, slots=3)
    a1 = stores.lease(A)
    assert not a1.warm  # never used: emptied for A by adopt
    stores.adopt(a1, A)
    a2 = stores.lease(A)
    stores.adopt(a2, A)
    assert {a1.slot, a2.slot} <= {0, 1, 2} and a1.slot != a2.slot
    stores.release(a2)
    os.utime(tmp_path / f"{a2.slot}.lock", (1, 1))
    stores.release(a1)  # released last: the warmest
    again = stores.lease(A)
    assert again.slot == a1.slot and again.warm
    stores.release(again)
    assert stores.warmest() == A


def test_a_store_serves_one_scope_and_is_emptied_before_another_uses_it(tmp_path):
    stores = LayerStores(tmp_path, slots=1)
    a = stores.lease(A)
    stores.adopt(a, A)
    (a.path / "layer").write_text(str(A))
    stores.release(a)
    for other in (B, A_PROTECTED, A):  # another tenant; the same tenant's other tier; back
        got = stores.lease(other)
        assert got.slot == 0 and not got.warm
        stores.adopt(got, other)
        assert list(got.path.iterdir()) == [] and stores.scope_of(0) == other
        (got.path / "layer").write_text(str(other))
        stores.release(got)
    deadline = time.monotonic() + 5
    while list(tmp_path.glob("trash-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not list(tmp_path.glob("trash-*"))  # the emptied data roots are deleted


def test_a_new_scope_takes_the_coldest_store(tmp_path):
    stores = LayerStores(tmp_path, slots=2)
    for scope, when in ((B, 1), (A, 2)):
        got = stores.lease(scope)
        stores.adopt(got, scope)
        stores.release(got)
        os.utime(tmp_path / f"{got.slot}.lock", (when, when))
    c = stores.lease(LayerScope("c", "unprotected"))
    assert stores.scope_of(c.slot) == B and not c.warm  # B's was released longest ago


def test_a_store_of_unknown_scope_is_nobodys(tmp_path):
    """A store from before stores had scopes mixed every tenant's layers: emptied first."""
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "mixed").write_text("everyone's")
    (tmp_path / "0.lock").touch()
    stores = LayerStores(tmp_path, slots=1)
    assert stores.warmest() is None
    got = stores.lease(A)
    assert got.slot == 0 and not got.warm
    stores.adopt(got, A)
    assert not (got.path / "mixed").exists()


def test_a_guess_never_takes_another_scopes_store(tmp_path):
    stores = LayerStores(tmp_path, slots=1)
    b = stores.lease(B)
    stores.adopt(b, B)
    stores.release(b)
    guess = stores.lease(A, recycle=False)
    assert guess.slot is None and guess.warm  # a scratch root, empty
    stores.release(guess)
    assert stores.scope_of(0) == B


def test_all_leased_gives_a_scratch_root_gone_when_released(tmp_path):
    stores = LayerStores(tmp_path, slots=1)
    held = stores.lease(A)
    scratch = stores.lease(A)
    assert scratch.slot is None and scratch.path.is_dir()
    stores.release(scratch)
    assert not scratch.path.exists()
    stores.release(held)


def test_a_lease_ends_with_its_holder(tmp_path):
    stores = LayerStores(tmp_path, slots=1)
    held = stores.lease(A)
    stores.adopt(held, A)
    assert stores.lease(A).slot is None
    assert stores.warmest() is None  # leased: not a guess for a starting daemon
    os.close(held.fd)  # what a crash does to the lock
    assert stores.lease(A).slot == 0
