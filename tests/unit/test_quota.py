"""The pure parts of agents/quota.py: when a workspace counts as full, which workspace a
sibling belongs to, and that a process that cannot mount says so once."""

from __future__ import annotations

import logging

import pytest

from agents import quota

MiB = 1024 * 1024


@pytest.mark.parametrize(("free", "total", "inodes", "expected"), [
    (0, 64 * MiB, 1000, True),
    (850 * 1024, 32 * MiB, 1000, True),  # ext4 refused a 1 MiB write with this much left
    (1700 * 1024, 4096 * MiB, 1000, True),
    (5 * MiB, 4096 * MiB, 1000, False),
    (3 * MiB, 16 * MiB, 1000, False),  # a tiny filesystem: an eighth of it is the margin
    (1 * MiB, 16 * MiB, 1000, True),
    (900 * MiB, 4096 * MiB, 3, True),  # no inode left: a step creating files gets ENOSPC too
])  # fmt: skip
def test_full(free, total, inodes, expected):
    assert quota.full(free, total, inodes) is expected


def test_siblings_belong_to_their_workspace():
    assert [quota.workspace_of(n) for n in ("j-1", "j-1.img", "j-1.disk", "j-1.layers", "a.b-2")] == ["j-1"] * 4 + ["a.b-2"]


def test_size_text():
    assert (quota.size_text(4096 * MiB), quota.size_text(32 * MiB)) == ("4.0 GiB", "32 MiB")


def test_without_root_no_quota_said_once(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(quota, "_verdict", {})
    monkeypatch.setattr(quota.os, "geteuid", lambda: 1000)
    with caplog.at_level(logging.WARNING, logger="farm.quota"):
        assert [quota.enforceable(32 * MiB, tmp_path) for _ in range(3)] == [None] * 3
    assert [r.getMessage() for r in caplog.records] == [
        "workspaces run without a disk quota here: farm is not root; executors.disk_quota_bytes (32 MiB) is not enforced"
    ]
    assert quota.enforceable(None, tmp_path) is None and list(tmp_path.iterdir()) == []
