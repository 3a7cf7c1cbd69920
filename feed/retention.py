"""Retention of raw mail: refused and ignored messages lose their raw bytes
after a while; blobs that nothing names any more are deleted.

The inbound-log rows stay (who sent what, when, and why it went where it
went); only the raw bytes go, and the row's reason says so. Accepted and
held messages keep theirs: a post's source, a message awaiting moderation.
`mailbridge serve` runs this daily; `mailbridge inbound purge` on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from feed.base import utcnow
from feed.blobrefs import discard_unreferenced
from feed.blobs import BlobStore
from feed.db import Database
from feed.inbound import InboundLog, InboundStatus

EXPIRING = (str(InboundStatus.REJECTED), str(InboundStatus.IGNORED))
ROWS_PER_TRANSACTION = 500
# A blob younger than this is never swept as unnamed: its delivery may not
# have committed yet (it would write it again, but need not pay for that).
ORPHAN_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class PurgeReport:
    rows: int  # inbound-log rows whose raw bytes went
    blobs_freed: int  # bytes deleted from the blob store

    def __str__(self) -> str:
        return (
            f"{self.rows} inbound row(s) lost their raw message; "
            f"{self.blobs_freed} bytes of unreferenced blobs deleted"
        )


def purge_inbound(db: Database, store: BlobStore, retention_days: int | None) -> PurgeReport:
    """Expire raw mail older than `retention_days` (None keeps it), then
    sweep the blobs that no row names."""
    rows, freed = 0, 0
    if retention_days is not None:
        rows, freed = expire_raw(db, store, utcnow() - timedelta(days=retention_days))
    freed += sweep_unreferenced(db, store, utcnow() - ORPHAN_GRACE)
    return PurgeReport(rows, freed)


def expire_raw(db: Database, store: BlobStore, before: datetime) -> tuple[int, int]:
    """Refused and ignored mail received before `before` loses its raw bytes:
    the rows no longer name them, and the blobs go unless something else
    names them. The rows changed and the bytes freed."""
    rows, freed = 0, 0
    note = f" [raw message deleted: kept {_days(before)} days]"
    while True:
        with db.transaction() as session:
            found = session.execute(
                select(InboundLog.id, InboundLog.sha256)
                .where(
                    InboundLog.status.in_(EXPIRING),
                    InboundLog.received_at < before,
                    InboundLog.sha256.is_not(None),
                )
                .order_by(InboundLog.id)
                .limit(ROWS_PER_TRANSACTION)
            ).all()
            ids = [row.id for row in found]
            if ids:
                session.execute(
                    update(InboundLog)
                    .where(InboundLog.id.in_(ids))
                    .values(sha256=None, reason=InboundLog.reason + note)
                )
        if not ids:
            return rows, freed
        rows += len(ids)
        # After the commit: a crash in between leaves blobs for the sweep, never a
        # row naming a deleted blob.
        freed += discard_unreferenced(db, store, {row.sha256 for row in found if row.sha256})


def sweep_unreferenced(db: Database, store: BlobStore, before: datetime) -> int:
    """Delete the blobs written before `before` that no row names (the full
    raw bytes of refused mail, the attachments of mail that was never
    posted, blobs of a crashed purge); the bytes freed."""
    freed, batch = 0, []
    for digest in store.digests_older_than(before.timestamp()):
        batch.append(digest)
        if len(batch) >= ROWS_PER_TRANSACTION:
            freed += discard_unreferenced(db, store, batch)
            batch = []
    return freed + discard_unreferenced(db, store, batch)


def _days(before: datetime) -> int:
    return max(0, round((utcnow() - before).total_seconds() / 86400))
