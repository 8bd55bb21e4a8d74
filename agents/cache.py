"""A job's dependency caches on the executor: restored after checkout, before the first
step; saved after the last step. Every outcome is noted in the job's log and kept in its
result (`caches`), and counted per pool for /metrics: a failed save is never silent, and a
failed restore leaves no half-restored tree behind (the job runs as on a miss).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from agents.workspace import Workspace
from farm.cache import archive
from farm.cache.blobs import DirectoryBlobStore
from farm.cache.index import CacheIndex
from farm.cache.scope import Scope, Tier, check_key, files_digest, render
from farm.errors import FarmError
from farm.models import CacheResult, CacheSpec
from farm.settings import Settings
from farm.store.jobs import Claim, JobStore

MB = 1_000_000


def job_scope(claim: Claim) -> Scope:
    git = claim.spec.source.git if claim.spec.source else None
    return Scope(claim.tenant, git.url if git else "-", Tier(claim.tier), git.ref if git else "-")


class JobCaches:
    def __init__(self, claim: Claim, workspace: Workspace, store: JobStore, settings: Settings, note: Callable[[str], None]) -> None:
        self.claim, self.workspace, self.note = claim, workspace, note
        self.specs = claim.spec.caches
        self.settings = settings
        self.index = CacheIndex(store.client, DirectoryBlobStore(settings.cache_dir), store.keys)
        self.stats_key = store.keys.stats(claim.spec.pool)
        self.scope = job_scope(claim)
        self.limits = archive.Limits(settings.cache.max_entry_bytes, settings.cache.max_entry_files)
        self.results: list[CacheResult] = []

    def _hash_files(self, patterns: list[str]) -> str:
        files, _ = self.workspace.collect(patterns, max_files=100_000)
        return files_digest((name, path.read_bytes()) for name, path in files)

    def _render(self, template: str) -> str:
        return render(template, env=self.claim.spec.env, hash_files=self._hash_files)

    def _count(self, field: str, n: int = 1) -> None:
        try:
            self.index.client.hincrby(self.stats_key, field, n)
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
            done = archive.restore(self.workspace.path, match.manifest, self.index.blobs, limits=self.limits,
                                   threads=self.settings.cache.restore_threads)  # fmt: skip
            took = time.monotonic() - t0
        except (FarmError, OSError, ValueError) as e:
            self._clear(spec)
            self.note(f"cache {key}: not restored: {e}")
            self._count("cache_restores_total:error")
            return CacheResult(key=key, restore="error", error=str(e))
        outcome = "hit" if match.exact else "partial"
        rate = done.bytes / MB / took if took > 0 else 0.0
        self.note(f"cache {key}: {outcome}{'' if match.exact else f' from {match.key}'}, {done.files} files, "
                  f"{done.bytes / MB:.1f} MB in {took:.2f} s ({rate:.0f} MB/s)")  # fmt: skip
        self._count(f"cache_restores_total:{outcome}")
        self._count("cache_restore_bytes_total", done.bytes)
        return CacheResult(key=key, restore=outcome, matched_key=match.key, restore_bytes=done.bytes,
                           restore_s=round(took, 3), restore_mb_s=round(rate, 1))  # fmt: skip

    def _clear(self, spec: CacheSpec) -> None:
        """Remove what a failed restore may have written."""
        for p in spec.paths:
            target = self.workspace.path / p
            if target.is_symlink() or target.is_file():
                target.unlink(missing_ok=True)
            elif target.is_dir():
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
        self._count("cache_saves_total:saved")
        self._count("cache_save_bytes_total", saved.bytes)
        return {"save": "saved", "save_bytes": saved.bytes, "save_s": round(took, 3)}
