"""A cache entry on disk: a tree of files packed into content-addressed, zstd-compressed packs
plus a manifest (paths, modes, sizes, where each file's bytes are), itself a blob.

Saving walks the paths without following links and refuses what a restore must never
create: absolute or `..` paths, links that point outside the workspace (followed through
the entry's other links, so a chain like `l -> .`, `u1 -> l/..`, `u2 -> u1/..` is caught at
the link that climbs out), device files, FIFOs and sockets, and trees over the size or file
limits. Restoring checks the manifest the same way before it writes anything, writes
through no link (O_NOFOLLOW), makes parent directories one at a time and only where every
step so far resolves inside the workspace (`dirs_inside`: farm runs as root, and a link
planted by a checkout or another cache must not lead it anywhere else), and stops at the
sizes the manifest declares, so a crafted entry cannot expand past its limit. Packs are fetched, verified against their
sha256 and decompressed straight into the files, several at once, with no temporary archive.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from farm.cache.blobs import BlobStore
from farm.paths import UnsafeEntry, safe_path

PACK_BYTES = 32 * 1024 * 1024
FORMAT = 1


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 4 * 1024**3
    max_files: int = 1_000_000


@dataclass(frozen=True)
class Saved:
    manifest: str  # digest
    blobs: list[str]  # every blob the entry needs, the manifest included
    bytes: int  # uncompressed
    files: int


@dataclass(frozen=True)
class Restored:
    bytes: int
    files: int


def _link_ok(rel: str, target: str) -> bool:
    if target.startswith("/") or "\x00" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined != ".." and not joined.startswith("../")


def _links_stay_inside(links: dict[str, str], max_hops: int = 40) -> None:
    """Raise UnsafeEntry for a link of the entry that, followed through the entry's other
    links (as the kernel would once it is restored), leads outside the root."""

    def resolve(path: str) -> bool:
        parts: list[str] = []
        todo = path.split("/")
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    return False
                parts.pop()
                continue
            parts.append(part)
            target = links.get("/".join(parts))
            if target is not None:
                hops += 1
                if hops > max_hops or target.startswith("/"):
                    return False
                parts.pop()
                todo = target.split("/") + todo
        return True

    for rel, target in links.items():
        if not resolve(posixpath.join(posixpath.dirname(rel), target)):
            raise UnsafeEntry(f"{rel} links outside the workspace ({target}), through the entry's own links")


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def dirs_inside(root: str, rel_dir: str) -> str:
    """Make the directory `rel_dir` under `root` (a real path), one component at a time,
    never through anything that resolves outside root; returns its real path. Raises
    UnsafeEntry where a link leads out or a non-directory is in the way."""
    cur = root
    for part in rel_dir.split("/"):
        if part in ("", "."):
            continue
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            real = os.path.realpath(nxt)
            if not (real == root or real.startswith(root + os.sep)) or not os.path.isdir(real):
                raise UnsafeEntry(f"{rel_dir}: a link in the workspace leads outside it")
            cur = real
        elif os.path.isdir(nxt):
            cur = nxt
        elif os.path.lexists(nxt):
            raise UnsafeEntry(f"{rel_dir}: something other than a directory is in the way")
        else:
            try:
                os.mkdir(nxt, 0o755)
            except FileExistsError:  # another thread of this restore made it
                if os.path.islink(nxt) or not os.path.isdir(nxt):
                    raise UnsafeEntry(f"{rel_dir}: something other than a directory is in the way") from None
            cur = nxt
    return cur


def path_inside(root: str, rel: str) -> str | None:
    """The path of `rel` under root with its parent's links resolved, if that parent is
    inside root (the last component is left as it is: it may be a link); else None."""
    parent = os.path.realpath(os.path.join(root, posixpath.dirname(rel)))
    if not (parent == root or parent.startswith(root + os.sep)):
        return None
    return os.path.join(parent, posixpath.basename(rel))


def save(root: Path, paths: list[str], blobs: BlobStore, *, limits: Limits = Limits(), level: int = 3) -> Saved | None:
    """Pack `paths` (relative to root) into blobs; None when none of them exists."""
    rootr = os.path.realpath(root)
    items: list[list] = []  # ["d", path, mode] | ["f", path, mode, size, pack] | ["l", path, target]
    packs: list[str] = []
    buf: list[bytes] = []
    buffered = total = files = 0
    cctx = zstandard.ZstdCompressor(level=level, threads=-1)

    def flush() -> None:
        nonlocal buf, buffered
        if buf:
            packs.append(blobs.put(cctx.compress(b"".join(buf))))
            buf, buffered = [], 0

    def add_file(rel: str, full: str, st: os.stat_result) -> None:
        nonlocal total, files, buffered
        total += st.st_size
        files += 1
        if total > limits.max_bytes:
            raise UnsafeEntry(f"cache over its size limit of {limits.max_bytes} bytes at {rel}")
        if files > limits.max_files:
            raise UnsafeEntry(f"cache over its limit of {limits.max_files} files at {rel}")
        with open(full, "rb") as f:
            data = f.read()
        if len(data) != st.st_size:
            raise UnsafeEntry(f"{rel} changed while it was saved")
        items.append(["f", rel, stat.S_IMODE(st.st_mode), len(data), len(packs)])
        buf.append(data)
        buffered += len(data)
        if buffered >= PACK_BYTES:
            flush()

    def add(rel: str, full: str) -> None:
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            if not _link_ok(rel, target):
                raise UnsafeEntry(f"{rel} links outside the workspace ({target})")
            items.append(["l", rel, target])
        elif stat.S_ISREG(st.st_mode):
            add_file(rel, full, st)
        elif stat.S_ISDIR(st.st_mode):
            items.append(["d", rel, stat.S_IMODE(st.st_mode)])
        else:
            raise UnsafeEntry(f"{rel} is a device, FIFO or socket; a cache holds files, directories and links only")

    found = False
    for p in paths:
        rel = safe_path(p)
        top = os.path.join(rootr, rel)
        if not os.path.lexists(top):
            continue
        if not _inside(rootr, os.path.dirname(top)):
            raise UnsafeEntry(f"{p} is reached through a link that leaves the workspace")
        found = True
        add(rel, top)
        if os.path.isdir(top) and not os.path.islink(top):
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    full = os.path.join(dirpath, name)
                    add(os.path.relpath(full, rootr), full)
                # os.walk does not descend into links to directories: they were added as links.
    if not found:
        return None
    _links_stay_inside({item[1]: item[2] for item in items if item[0] == "l"})
    flush()
    manifest = json.dumps({"format": FORMAT, "packs": packs, "items": items}, separators=(",", ":")).encode()
    digest = blobs.put(zstandard.ZstdCompressor(level=level).compress(manifest))
    return Saved(digest, [*dict.fromkeys(packs), digest], total, files)


def read_manifest(digest: str, blobs: BlobStore, limits: Limits) -> dict:
    data = zstandard.ZstdDecompressor().decompress(blobs.get(digest), max_output_size=256 * 1024 * 1024)
    manifest = json.loads(data)
    if manifest.get("format") != FORMAT:
        raise UnsafeEntry(f"cache entry format {manifest.get('format')!r} is not {FORMAT}")
    total = files = 0
    for item in manifest["items"]:
        kind, rel = item[0], item[1]
        if safe_path(rel) != rel:
            raise UnsafeEntry(f"cache entry holds an unsafe path {rel!r}")
        if kind == "l" and not _link_ok(rel, item[2]):
            raise UnsafeEntry(f"cache entry holds a link outside the workspace: {rel} -> {item[2]}")
        if kind == "f":
            total += int(item[3])
            files += 1
            if not 0 <= int(item[4]) < len(manifest["packs"]):
                raise UnsafeEntry(f"cache entry refers to a pack it does not have for {rel}")
        elif kind not in ("d", "l"):
            raise UnsafeEntry(f"cache entry holds an unknown kind {kind!r}")
    if total > limits.max_bytes or files > limits.max_files:
        raise UnsafeEntry(f"cache entry expands to {total} bytes in {files} files, over the limit")
    _links_stay_inside({item[1]: item[2] for item in manifest["items"] if item[0] == "l"})
    return manifest


def restore(root: Path, digest: str, blobs: BlobStore, *, limits: Limits = Limits(), threads: int = 4) -> Restored:
    manifest = read_manifest(digest, blobs, limits)
    rootr = os.path.realpath(root)
    made: dict[str, str] = {}  # relative directory -> its real path, made inside root

    def parent_ok(rel: str) -> str:
        parent = posixpath.dirname(rel)
        if parent not in made:
            made[parent] = dirs_inside(rootr, parent)
        return os.path.join(made[parent], posixpath.basename(rel))

    by_pack: dict[int, list[list]] = {}
    links = []
    for item in manifest["items"]:
        if item[0] == "d":
            full = parent_ok(item[1] + "/x")
            os.chmod(os.path.dirname(full), item[2] | 0o700)
        elif item[0] == "f":
            by_pack.setdefault(item[4], []).append(item)
        else:
            links.append(item)

    def unpack(index: int) -> int:
        files = by_pack[index]
        data = blobs.get(manifest["packs"][index])
        want = sum(f[3] for f in files)
        raw = zstandard.ZstdDecompressor().stream_reader(data)
        written = 0
        for _, rel, mode, size, _ in files:
            full = parent_ok(rel)
            if os.path.islink(full) or os.path.isdir(full):
                raise UnsafeEntry(f"{rel}: something other than a file is in the way")
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                left = size
                while left:
                    chunk = raw.read(min(left, 4 * 1024 * 1024))
                    if not chunk:
                        raise UnsafeEntry(f"cache pack ends before {rel} does")
                    os.write(fd, chunk)
                    left -= len(chunk)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            written += size
        if written != want or raw.read(1):
            raise UnsafeEntry("cache pack holds more than its manifest says")
        return written

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(by_pack) or 1))) as pool:
        total = sum(pool.map(unpack, sorted(by_pack)))
    for _, rel, target in links:
        full = parent_ok(rel)
        if os.path.lexists(full) and not os.path.isdir(full):
            os.unlink(full)
        os.symlink(target, full)
    return Restored(total, sum(len(v) for v in by_pack.values()))
