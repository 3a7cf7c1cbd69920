"""Which blobs rows still name, and deleting those that none does, safely.

Blobs are content-addressed and shared: one raw message may be named by
several inbound rows, one file by the attachments of several posts. A blob
is deleted only when no row names it, and never under a transaction about to
name it. Such a transaction first pins the digests it will name and makes
sure their files exist, writing them again if a deletion got there first
(`pin_stored`); a deletion claims each digest and checks the rows inside one
transaction (`discard_unreferenced`). On SQLite writers take turns
(`feed.db.writer_turn`), which is that lock already; on PostgreSQL it is a
transaction-level advisory lock per digest: shared to pin, tried (never
waited for) to delete, so the two never deadlock and a blob in use is simply
left for the next sweep.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from sqlalchemy import Connection, select, text

from feed.blobs import BlobStore
from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Attachment

CHUNK = 500  # digests a statement asks about

_PIN = text("SELECT pg_advisory_xact_lock_shared(k) FROM unnest(CAST(:keys AS bigint[])) AS k")
_CLAIM = text(
    "SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE pg_try_advisory_xact_lock(k)"
)


def advisory_key(digest: str) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit number) for a digest."""
    return int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)


def pin_stored(conn: Connection, store: BlobStore, blobs: Iterable[tuple[str, bytes]]) -> None:
    """Before rows naming these blobs are written: hold them against
    deletion until the transaction ends, and write any that is missing."""
    wanted = dict(blobs)
    if not wanted:
        return
    if _advisory(conn):
        conn.execute(_PIN, {"keys": sorted(advisory_key(d) for d in wanted)})
    for digest, data in wanted.items():
        if not store.exists(digest):
            store.put(data)


def referenced(conn: Connection, digests: Collection[str]) -> set[str]:
    """Those of `digests` that an attachment or an inbound-log row names."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(digests))):
        for column in (Attachment.sha256, InboundLog.sha256):
            found.update(d for d in conn.scalars(select(column).where(column.in_(chunk))) if d)
    return found


def discard_unreferenced(db: Database, store: BlobStore, digests: Collection[str]) -> int:
    """Delete the blobs of `digests` that no row names; the bytes freed."""
    freed = 0
    for chunk in _chunks(sorted(set(digests))):
        with db.transaction() as session:
            conn = session.connection()
            claimed = _claim(conn, chunk)
            for digest in sorted(set(claimed) - referenced(conn, claimed)):
                freed += store.delete(digest)
    return freed


def _claim(conn: Connection, digests: list[str]) -> list[str]:
    if not _advisory(conn):
        return digests  # this transaction holds SQLite's one writer turn
    by_key = {advisory_key(d): d for d in digests}
    got = conn.scalars(_CLAIM, {"keys": sorted(by_key)})
    return [by_key[key] for key in got]


def _advisory(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
