"""A job's dependency caches on the executor: restored after checkout, before the first
step; saved after the last step. Every outcome is noted in the job's log and kept in its
result (`caches`), and counted per pool for /metrics: a failed save is never silent, and a
failed restore leaves no half-restored tree behind (the job runs as on a miss).

Warm restores. The first time a node restores an entry it unpacks it once into a node tree
(`cache.node_dir`, keyed by the entry's manifest digest); every restore of that entry on
this node, the first included, then mounts each cached path as an overlay: the node tree is
the read-only lower layer and the job gets a writable upper layer of its own, out of its
steps' sight (on the workspace's own filesystem when it has a disk quota, agents/quota.py:
what a job writes to a restored path counts against it). A restore that is a mount copies
no bytes, and a job that writes to, deletes or replaces a restored file changes only its
upper layer, so the next job restores exactly
what was saved (steps running as root included: the write never reaches the lower layer
through the mount). Overlay mounts need root; without it, or where a path is already
present in the workspace, the entry is unpacked into the workspace instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agents import quota
from agents.workspace import Workspace, give
from farm.cache import archive
from farm.cache.archive import path_inside
from farm.cache.blobs import DirectoryBlobStore
from farm.cache.scope import Scope, Tier, check_key, files_digest, render
from farm.errors import FarmError
from farm.models import CacheResult, CacheSpec
from farm.settings import Settings
from farm.store.cache_index import CacheIndex
from farm.store.jobs import Claim, JobStore

MB = 1_000_000


def job_scope(claim: Claim) -> Scope:
    git = claim.spec.source.git if claim.spec.source else None
    return Scope(claim.tenant, git.url if git else "-", Tier(claim.tier), git.ref if git else "-")


class NodeTrees:
    """Entries this node has unpacked, each once, as read-only lower layers for overlays.
    A tree appears by rename when complete; the least recently used go beyond max_bytes."""

    def __init__(
        self, root: Path, blobs: DirectoryBlobStore, limits: archive.Limits, threads: int, max_bytes: int,
        owner: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        """`owner`: who the trees are given to (the steps' user, when farm is root): an
        overlay shows a lower layer's owners, so they must be the steps' own."""
        self.root = root if owner is None else root / f"uid-{owner[0]}-{owner[1]}"
        self.blobs, self.limits, self.threads, self.max_bytes, self.owner = blobs, limits, threads, max_bytes, owner

    def get(self, manifest: str) -> tuple[Path, int] | None:
        tree = self.root / manifest
        try:
            size = int((tree / "bytes").read_text())
        except (OSError, ValueError):
            return None
        os.utime(tree)
        return tree / "tree", size

    def unpack(self, manifest: str) -> tuple[Path, int]:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        try:
            (tmp / "tree").mkdir()
            done = archive.restore(tmp / "tree", manifest, self.blobs, limits=self.limits, threads=self.threads)
            if self.owner is not None:
                give(tmp / "tree", self.owner)
            (tmp / "bytes").write_text(str(done.bytes))
            try:
                os.rename(tmp, self.root / manifest)
            except OSError:  # another executor of this node unpacked it first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._evict()
        got = self.get(manifest)
        assert got is not None
        return got

    def _evict(self) -> None:
        trees = []
        for d in self.root.iterdir():
            try:
                trees.append((d.stat().st_mtime, int((d / "bytes").read_text()), d))
            except (OSError, ValueError):
                continue
        total = sum(size for _, size, _ in trees)
        for _, size, d in sorted(trees)[:-1]:  # never the newest: it is about to be mounted
            if total <= self.max_bytes:
                break
            # A tree still mounted by a running job stays readable: the overlay holds it open.
            shutil.rmtree(d, ignore_errors=True)
            total -= size


def _taken(ws: str, p: str) -> bool:
    """Whether something is at p in the workspace already (or p leads out of it)."""
    target = path_inside(ws, p)
    return target is None or os.path.lexists(target)


def _mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if any(c in opts for c in " \n"):
        raise OSError("overlay paths must not contain spaces")
    run = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], capture_output=True, text=True)
    if run.returncode != 0:
        raise OSError(f"overlay mount failed: {run.stderr.strip()}")


def unmount_under(root: Path, *, below_only: bool = False) -> int:
    """Unmount everything mounted at or under root (strictly under it with below_only: a
    bounded workspace is a mount itself, agents/quota.py): the overlays of attempts that did
    not end cleanly (or of one that is ending), and a dead DinD executor's shared bind mount."""
    # Never through a link a job put in its workspace's place or under it (agents/quota.py).
    points = [p for p in quota.mounts_under(root) if not (below_only and p == quota.trusted(root))]
    quota.unmount(points)
    return len(points)


def overlays_possible() -> bool:
    return os.geteuid() == 0 and Path("/proc/self/mounts").exists()


class JobCaches:
    def __init__(
        self, claim: Claim, workspace: Workspace, store: JobStore, settings: Settings, note: Callable[[str], None],
        *, overlays: bool = True, owner: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        self.claim, self.workspace, self.note = claim, workspace, note
        self.owner = owner
        self.warnings: list[str] = []
        self.specs = claim.spec.caches
        self.settings = settings
        self.index = CacheIndex(store.client, DirectoryBlobStore(settings.cache_dir), store.keys)
        self.scope = job_scope(claim)
        self.limits = archive.Limits(settings.cache.max_entry_bytes, settings.cache.max_entry_files)
        self.results: list[CacheResult] = []
        c = settings.cache
        self.nodes = (NodeTrees(settings.cache_node_dir, self.index.blobs, self.limits, c.restore_threads, c.node_max_bytes, owner)
                      if overlays and c.overlay and overlays_possible() else None)  # fmt: skip
        self.layers = workspace.layers  # upper layers: out of the steps' sight, within the workspace's quota

    def _hash_files(self, patterns: list[str]) -> str:
        files, _ = self.workspace.collect(patterns, max_files=100_000)
        if not files:
            # As actions/cache, an empty digest; but a key that silently lost its hash is
            # shared by every commit, so say so.
            why = f"hashFiles({', '.join(repr(p) for p in patterns)}) matched no file: the key has no hash in it"
            if why not in self.warnings:
                self.warnings.append(why)
                self.note(f"warning: {why}")
        return files_digest((name, path.read_bytes()) for name, path in files)

    def _render(self, template: str) -> str:
        return render(template, env=self.claim.spec.env, hash_files=self._hash_files)

    def _count(self, *fields: str, **amounts: float) -> None:
        """Add 1 to each field and each amount to its field of the pool's stats, in one round
        trip; metrics are advisory, so a failure is not the job's."""
        try:
            self.index.count(self.claim.spec.pool, *fields, **amounts)
        except Exception:  # noqa: BLE001 - metrics are advisory
            pass

    def restore(self) -> None:
        for spec in self.specs:
            self.results.append(self._restore_one(spec))

    def _restore_one(self, spec: CacheSpec) -> CacheResult:
        key = spec.key
        try:
            key = check_key(self._render(spec.key))
            prefixes = [check_key(self._render(k)) for k in spec.restore_keys]
            match = self.index.lookup(self.scope, key, prefixes)
            if match is None:
                self.note(f"cache {key}: miss")
                self._count("cache_restores_total:miss")
                return CacheResult(key=key, restore="miss")
            t0 = time.monotonic()
            warm, restored = self._restore_entry(spec, match.manifest)
            took = time.monotonic() - t0
        except (FarmError, OSError, ValueError) as e:
            self._clear(spec)
            self.note(f"cache {key}: not restored: {e}")
            self._count("cache_restores_total:error")
            return CacheResult(key=key, restore="error", error=str(e))
        outcome = "hit" if match.exact else "partial"
        rate = restored / MB / took if took > 0 else 0.0
        how = "mounted from this node's copy" if warm else "unpacked"
        self.note(f"cache {key}: {outcome}{'' if match.exact else f' from {match.key}'}, {restored / MB:.1f} MB {how} "
                  f"in {took:.2f} s ({rate:.0f} MB/s)")  # fmt: skip
        self._count(f"cache_restores_total:{outcome}", cache_restore_bytes_total=restored,
                    cache_restore_seconds_total=float(took))  # fmt: skip
        return CacheResult(key=key, restore=outcome, matched_key=match.key, restore_bytes=restored, warm=warm,
                           restore_s=round(took, 3), restore_mb_s=round(rate, 1))  # fmt: skip

    def _restore_entry(self, spec: CacheSpec, manifest: str) -> tuple[bool, int]:
        """(warm, bytes): mount overlays on this node's copy of the entry, or unpack it.

        Every path here comes from a job and is resolved before farm (root) touches it: in
        the node's tree, to a real path inside that tree; in the workspace, through parents
        that stay inside it (a link a checkout or another cache planted leads nowhere else)."""
        ws = os.path.realpath(self.workspace.path)
        if self.nodes is not None and not any(_taken(ws, p) for p in spec.paths):
            got = self.nodes.get(manifest)
            warm = got is not None
            tree, size = got if got is not None else self.nodes.unpack(manifest)
            tree_real = os.path.realpath(tree)
            for p in spec.paths:
                lower = path_inside(tree_real, p)
                if lower is None or not os.path.lexists(lower):
                    continue  # not in the entry (or only through a link out of it)
                parent = archive.dirs_inside(ws, os.path.dirname(p))
                target = os.path.join(parent, os.path.basename(p))
                if os.path.islink(lower) or not os.path.isdir(lower):  # a file or link: a copy costs nothing
                    shutil.copy2(lower, target, follow_symlinks=False)
                    continue
                layer = self.layers / uuid.uuid4().hex[:8]
                (layer / "upper").mkdir(parents=True)
                (layer / "work").mkdir()
                if self.owner is not None:
                    os.chown(layer / "upper", *self.owner)  # the merged root is the upper layer's
                os.mkdir(target)
                _mount_overlay(Path(lower), layer / "upper", layer / "work", Path(target))
            return warm, size
        done = archive.restore(ws, manifest, self.index.blobs, limits=self.limits, threads=self.settings.cache.restore_threads)
        return False, done.bytes

    def close(self) -> None:
        """Unmount the job's overlays and drop its upper layers (the attempt is over)."""
        if self.layers.exists():
            unmount_under(self.workspace.path, below_only=True)
            shutil.rmtree(self.layers, ignore_errors=True)

    def _clear(self, spec: CacheSpec) -> None:
        """Remove what a failed restore may have written (inside the workspace only: never
        through a link that leads out of it)."""
        ws = os.path.realpath(self.workspace.path)
        for p in spec.paths:
            target = path_inside(ws, p)
            if target is None:
                continue
            if os.path.islink(target) or os.path.isfile(target):
                os.unlink(target)
            elif os.path.isdir(target):
                if os.path.ismount(target):
                    unmount_under(Path(target))
                shutil.rmtree(target, ignore_errors=True)

    def save(self, succeeded: bool) -> None:
        for i, (spec, result) in enumerate(zip(self.specs, self.results, strict=True)):
            self.results[i] = result.model_copy(update=self._save_one(spec, result, succeeded))

    def _save_one(self, spec: CacheSpec, result: CacheResult, succeeded: bool) -> dict:
        if spec.save == "never" or (spec.save == "on_success" and not succeeded):
            return {"save": "skipped"}
        key = result.key
        try:
            check_key(key)
            if result.restore == "hit" or self.index.exists(self.scope, key):
                self.note(f"cache {key}: not saved, the entry exists")
                return {"save": "exists"}
            t0 = time.monotonic()
            saved = archive.save(self.workspace.path, spec.paths, self.index.blobs, limits=self.limits)
            if saved is None:
                self.note(f"cache {key}: not saved, none of {', '.join(spec.paths)} exists")
                return {"save": "nothing"}
            made, _ = self.index.commit(self.scope, key, saved)
            took = time.monotonic() - t0
            if not made:
                self.index.release(saved.blobs)
                self.note(f"cache {key}: another job saved it first")
                self._count("cache_saves_total:exists")
                return {"save": "exists"}
            quota = self.settings.cache.quota_bytes
            evicted = self.index.evict(self.scope.tenant, quota, int(quota * self.settings.cache.protected_share))
        except (FarmError, OSError, ValueError) as e:
            self.note(f"cache {key}: save failed: {e}")
            self._count("cache_saves_total:error")
            return {"save": "error", "error": str(e)}
        self.note(f"cache {key}: saved {saved.files} files, {saved.bytes / MB:.1f} MB in {took:.2f} s"
                  + (f"; evicted {len(evicted)} older entr{'y' if len(evicted) == 1 else 'ies'}" if evicted else ""))  # fmt: skip
        self._count("cache_saves_total:saved", cache_save_bytes_total=saved.bytes)
        return {"save": "saved", "save_bytes": saved.bytes, "save_s": round(took, 3)}
