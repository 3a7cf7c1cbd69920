"""The spool: messages being received, in memory while small, in a file
under the data folder once large.

A large message is written to its spool file as its lines arrive, so the
server never holds it whole, and what goes to a delivery worker is the
file's name (`SpooledMessage`), not a pickled copy of its bytes; the worker
reads it itself. A spool file lives until its message is answered; nothing
in it was promised to anyone (no 250 was given), so the files a crash
leaves behind are removed at the next start.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mailbridge.pipeline.types import Envelope, RawMessage, Source

log = logging.getLogger(__name__)

# Messages up to this size stay in memory (most mail is a few KB).
IN_MEMORY_LIMIT = 1024 * 1024
# A spooling message is written out in pieces of about this size.
WRITE_CHUNK = 256 * 1024
SPOOL_PREFIX = "msg-"


@dataclass(frozen=True)
class SpooledMessage:
    """A received message in a spool file; what crosses to a delivery worker."""

    path: Path
    size: int
    envelope: Envelope
    source: Source

    def load(self) -> RawMessage:
        return RawMessage(self.path.read_bytes(), self.envelope, self.source)


# What a door hands to the deliverer: small messages as they are.
Delivery = RawMessage | SpooledMessage


def delivery_size(item: Delivery) -> int:
    return item.size if isinstance(item, SpooledMessage) else len(item.data)


def load_delivery(item: Delivery) -> RawMessage:
    return item.load() if isinstance(item, SpooledMessage) else item


def release_delivery(item: Delivery) -> None:
    """Remove a delivery's spool file, once its message is answered."""
    if isinstance(item, SpooledMessage):
        item.path.unlink(missing_ok=True)


class Spool:
    """The spool folder."""

    def __init__(self, folder: Path, in_memory_limit: int = IN_MEMORY_LIMIT) -> None:
        self.folder = folder
        self.in_memory_limit = in_memory_limit

    def writer(self) -> SpoolWriter:
        return SpoolWriter(self)

    def remove_leftovers(self) -> int:
        """Remove the spool files of a previous run (none of them was answered)."""
        removed = 0
        for path in self.folder.glob(f"{SPOOL_PREFIX}*"):
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("removed %d unanswered message(s) left in the spool", removed)
        return removed


class SpoolWriter:
    """One message being received: bytes in memory, then in its spool file."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.size = 0
        self._buffer = bytearray()
        self._file: tuple[int, Path] | None = None

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        limit = WRITE_CHUNK if self._file is not None else self.spool.in_memory_limit
        if len(self._buffer) > limit:
            self._flush()

    def finish(self, envelope: Envelope, source: Source) -> Delivery:
        """The message received: in memory if small, else in its closed spool file."""
        if self._file is None:
            data = bytes(self._buffer)
            self._buffer = bytearray()
            return RawMessage(data, envelope, source)
        self._flush()
        fd, path = self._file
        os.close(fd)
        self._file = None
        return SpooledMessage(path, self.size, envelope, source)

    def discard(self) -> None:
        """Forget the message (refused, or the connection was lost)."""
        self._buffer = bytearray()
        if self._file is not None:
            fd, path = self._file
            os.close(fd)
            path.unlink(missing_ok=True)
            self._file = None

    def _flush(self) -> None:
        if self._file is None:
            self.spool.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.spool.folder, prefix=SPOOL_PREFIX)
            self._file = (fd, Path(name))
        view = memoryview(self._buffer)
        written = 0
        while written < len(view):
            written += os.write(self._file[0], view[written:])
        view.release()
        self._buffer.clear()
