"""A pool's DinD layer stores on one machine: daemon data roots, each holding the layers of
one scope (a tenant and a trust tier) and leased by one private daemon at a time.

Pure file-system bookkeeping (flocks, scope files, renames), no Docker: the dind runtime
(agents/runtimes/dind.py) starts its daemon on the store a lease gives it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from agents.runtimes.docker import LayerScope


@dataclass
class StoreLease:
    slot: int | None  # None: a scratch data root, deleted when released
    path: Path
    fd: int | None = None
    warm: bool = False  # it holds the asked scope's layers already; else `adopt` empties it first


class LayerStores:
    """Daemon data roots of one pool on this machine, each holding one scope's layers and
    leased by one daemon at a time.

    `<slot>/` is the data root; `<slot>.lock` its lease, an exclusive `flock`, so it ends
    when its holder does, crash included (its mtime says when the slot was last released);
    `<slot>.scope` the scope whose layers it holds, written by `adopt` under the lease. A
    store without one (made before stores had scopes, or emptied halfway) is nobody's: it
    is emptied before any scope uses it. Emptying renames the data root away first, so a
    store never holds two scopes' layers even for a moment; the old root is deleted in the
    background (and by the next lease, if this process died first)."""

    def __init__(self, root: Path, slots: int) -> None:
        self.root, self.slots = root, slots

    def _last_used(self, slot: int) -> float:
        try:
            return (self.root / f"{slot}.lock").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _order(self) -> list[int]:
        """Warmest (most recently released) first; never used last."""
        return sorted(range(self.slots), key=lambda i: (-self._last_used(i), i))

    def scope_of(self, slot: int) -> LayerScope | None:
        try:
            got = json.loads((self.root / f"{slot}.scope").read_text())
            return LayerScope(str(got["tenant"]), str(got["tier"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # nobody's: emptied before use

    def _lock(self, slot: int) -> int | None:
        fd = os.open(self.root / f"{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def warmest(self) -> LayerScope | None:
        """The scope of the free store released last: a starting daemon's guess at its first job's."""
        for slot in self._order():
            if (scope := self.scope_of(slot)) is not None and (fd := self._lock(slot)) is not None:
                os.close(fd)  # a look, not a lease: its mtime stays
                return scope
        return None

    def lease(self, scope: LayerScope | None, *, recycle: bool = True) -> StoreLease:
        """A store for `scope`: its warmest free one; else (if `recycle`) the coldest free
        store of another scope, to be emptied by `adopt`; else a scratch data root."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        if scope is not None and self.slots:
            mine = [i for i in self._order() if self.scope_of(i) == scope]
            others = sorted(set(range(self.slots)) - set(mine), key=lambda i: (self._last_used(i), i)) if recycle else []
            for slot in mine + others:
                if (fd := self._lock(slot)) is None:
                    continue
                warm = self.scope_of(slot) == scope  # read again under the lease
                if not warm and not recycle:
                    os.close(fd)
                    continue
                path = self.root / str(slot)
                path.mkdir(mode=0o700, exist_ok=True)
                return StoreLease(slot, path, fd, warm)
        return StoreLease(None, Path(tempfile.mkdtemp(prefix="scratch-", dir=self.root)), warm=True)

    def adopt(self, lease: StoreLease, scope: LayerScope) -> None:
        """Make the leased store `scope`'s, empty unless it held that scope's layers."""
        if lease.warm or lease.slot is None:
            return
        (self.root / f"{lease.slot}.scope").unlink(missing_ok=True)  # nobody's until emptied
        trash = self.root / f"trash-{lease.slot}-{uuid.uuid4().hex[:8]}"
        lease.path.rename(trash)
        self._discard(trash)
        lease.path.mkdir(mode=0o700)
        tmp = self.root / f"{lease.slot}.scope.tmp"
        tmp.write_text(json.dumps({"tenant": scope.tenant, "tier": scope.tier}))
        os.replace(tmp, self.root / f"{lease.slot}.scope")
        lease.warm = True

    def _sweep(self) -> None:
        for trash in self.root.glob("trash-*"):
            self._discard(trash)

    _discarding: set[Path] = set()  # the old data roots this process is deleting

    def _discard(self, trash: Path) -> None:
        if trash not in LayerStores._discarding:
            LayerStores._discarding.add(trash)
            threading.Thread(target=shutil.rmtree, args=(trash, True), name="discard-store", daemon=True).start()

    def release(self, lease: StoreLease) -> None:
        if lease.fd is None:
            shutil.rmtree(lease.path, ignore_errors=True)
            return
        try:
            os.utime(self.root / f"{lease.slot}.lock")
        finally:
            fcntl.flock(lease.fd, fcntl.LOCK_UN)
            os.close(lease.fd)
