"""Content-addressed blobs: named by the sha256 of their bytes, verified on write and read.

`BlobStore` is the seam (an object store can implement these four methods); `DirectoryBlobStore`
keeps blobs under a directory (the data dir on one machine, a shared volume in a cluster).
A blob is written to a temporary name, synced, read back and checked, then renamed, so a
reader never sees a partial or mangled one; writing a blob that exists already is a no-op
(two saves of the same bytes share it).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from farm.errors import FarmError

DIGEST_LEN = 64


class CorruptBlob(FarmError):
    """A blob's bytes no longer hash to its name (or it is missing)."""


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...

    def delete(self, digest: str) -> None: ...

    def exists(self, digest: str) -> bool: ...


def _check(digest: str) -> str:
    if len(digest) != DIGEST_LEN or any(c not in "0123456789abcdef" for c in digest):
        raise CorruptBlob(f"not a blob name: {digest!r}")
    return digest


def _sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class DirectoryBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        _check(digest)
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if _sha256_of(tmp) != digest:  # what reached the disk, read back before it gets its name
                raise CorruptBlob(f"blob {digest[:12]} was not written intact")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            raise CorruptBlob(f"blob {digest[:12]} is missing") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptBlob(f"blob {digest[:12]} is corrupt (its bytes do not match its sha256)")
        return data

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)
