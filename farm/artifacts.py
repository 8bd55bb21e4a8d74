"""Artifact storage: files a job keeps after its steps, by job, attempt and name.

`ArtifactStore` is the seam; `DirectoryStore` keeps them under a directory (the data dir on
one machine, a shared volume in a cluster); an object store can implement the same four
methods later. Names are relative POSIX paths inside the job's workspace; `safe_name`
refuses anything that could point elsewhere, and the directory store resolves every path
inside its job directory or refuses it. Files are written to a temporary name and renamed,
so a reader never sees a partial artifact.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from farm.errors import InvalidInput, NotFound
from farm.models import ArtifactInfo


def safe_name(name: str) -> str:
    """A relative POSIX path with no '..', no empty or '.' parts, no backslash or NUL."""
    p = PurePosixPath(name)
    if (
        not name
        or len(name) > 1024
        or p.is_absolute()
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise InvalidInput(f"invalid artifact name {name!r}")
    return str(p)


class ArtifactStore(Protocol):
    def put(self, job_id: str, attempt: int, name: str, src: Path) -> ArtifactInfo: ...

    def open(self, job_id: str, attempt: int, name: str) -> BinaryIO: ...

    def delete(self, job_id: str) -> None: ...

    def jobs(self) -> Iterator[str]: ...


class DirectoryStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, job_id: str, attempt: int, name: str) -> Path:
        if not job_id.isalnum():
            raise InvalidInput(f"invalid job id {job_id!r}")
        base = (self.root / job_id / str(attempt)).resolve()
        path = (base / safe_name(name)).resolve()
        if not path.is_relative_to(base):
            raise InvalidInput(f"artifact name {name!r} escapes its job")
        return path

    def put(self, job_id: str, attempt: int, name: str, src: Path) -> ArtifactInfo:
        dst = self._path(job_id, attempt, name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".partial-")
        try:
            # O_NOFOLLOW: the source was checked to be a regular file inside its workspace; a
            # link put in its place since is refused, not followed.
            with os.fdopen(fd, "wb") as out, os.fdopen(os.open(src, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ArtifactInfo(name=safe_name(name), size=size, sha256=digest.hexdigest())

    def open(self, job_id: str, attempt: int, name: str) -> BinaryIO:
        path = self._path(job_id, attempt, name)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError) as e:
            raise NotFound(f"no artifact {name!r} for job {job_id}") from e

    def delete(self, job_id: str) -> None:
        if job_id.isalnum():
            shutil.rmtree(self.root / job_id, ignore_errors=True)

    def jobs(self) -> Iterator[str]:
        if self.root.is_dir():
            yield from (p.name for p in self.root.iterdir() if p.is_dir())
