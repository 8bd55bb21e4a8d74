"""Pure parts of the dind runtime: which images a Dockerfile starts from, and how a pool's
layer stores are leased (file locks, no Docker)."""

import os

from agents.runtimes.dind import LayerStores
from agents.runtimes.docker import from_images


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


def test_layer_stores_lease_each_store_once_and_the_warmest_first(tmp_path):
    stores = LayerStores(tmp_path, slots=2)
    a, b = stores.lease(), stores.lease()
    assert {a.slot, b.slot} == {0, 1}
    scratch = stores.lease()  # all leased: a scratch data root, gone when released
    assert scratch.slot is None and scratch.path.is_dir()
    stores.release(scratch)
    assert not scratch.path.exists()
    stores.release(b)
    os.utime(tmp_path / f"{a.slot}.lock", (1, 1))
    stores.release(a)  # released last: the warmest
    assert stores.lease().slot == a.slot


def test_a_lease_ends_with_its_holder(tmp_path):
    stores = LayerStores(tmp_path, slots=1)
    held = stores.lease()
    assert stores.lease().slot is None
    os.close(held.fd)  # what a crash does to the lock
    assert stores.lease().slot == 0
