"""Content-addressed blob store: raw messages and attachments, by SHA-256.

A blob is written to a temporary file, fsynced and renamed into place before
the database transaction that refers to it commits, so a committed row never
points at a missing file. Writing the same bytes twice is a no-op.

Blobs fan out over 256 folders by their first two hex digits, as git's
objects do. Two levels (65,536 folders) would cost a new folder, and its
journal commit, for nearly every blob of the first hundred thousand; a
single level keeps folders under about 4,000 entries per million blobs,
which ext4 and XFS index.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Concurrent writers: each blob waits on two fsyncs (about a millisecond on
# our disks), time better spent parsing the next message.
WRITER_THREADS = 4


@dataclass(frozen=True)
class PendingBlob:
    """A blob being written: its digest now, its durability once `wait` returns."""

    digest: str
    write: Future[str]

    def wait(self) -> str:
        """Block until the blob is durable; raise what the write raised."""
        return self.write.result()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._writers: ThreadPoolExecutor | None = None

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` durably; return its SHA-256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.exists():
            return digest
        self._ensure_folder(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest

    def _ensure_folder(self, folder: Path) -> None:
        if folder.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            return
        # A new folder's own entry must be durable too before a blob in it is.
        _fsync_dir(self.root)

    def put_soon(self, data: bytes) -> PendingBlob:
        """`put` in a background thread."""
        if self._writers is None:
            self._writers = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="blob-writer")
        return PendingBlob(hashlib.sha256(data).hexdigest(), self._writers.submit(self.put, data))

    def get(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def delete(self, sha256: str) -> int:
        """Remove a blob; the bytes freed (0 when it was not there).

        Only `feed.blobrefs.discard_unreferenced` calls this: it knows no row
        names the blob and no delivery is about to.
        """
        path = self.path_for(sha256)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def digests_older_than(self, cutoff: float) -> Iterator[str]:
        """Every blob last written before `cutoff` (a time.time() value); the
        temporary files of writes that died before it are removed on the way."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.stat().st_mtime >= cutoff:
                    continue
                if entry.name.startswith(".tmp-"):
                    Path(entry.path).unlink(missing_ok=True)
                elif len(entry.name) == 64:
                    yield entry.name


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
