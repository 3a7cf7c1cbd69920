"""What a refused message keeps of its raw bytes: its header and the start of its body.

A refusal is the sender's fault, and its evidence is the header (who, from
where, through which relays) and the first lines of the body; keeping whole
25 MB messages for strangers let ten of them fill 200 MB in 10 s. The row of
a refusal names a blob of that excerpt and says so; the full blob, and the
attachments a refused message had written, are deleted after the commit
unless another row names them (`feed.blobrefs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

from sqlalchemy import Connection

from feed.blobrefs import pin_stored
from feed.blobs import BlobStore
from feed.inbound import InboundStatus

# The header ends at the first empty line (RFC 5322 §2.1); bare LF from
# careless clients too.
_HEADER_ENDS = (b"\r\n\r\n", b"\n\n")


def refused_excerpt(data: bytes, keep: int) -> bytes:
    """The header (at most `keep` bytes of it) and the first `keep` bytes of the body."""
    return data[: _header_length(data, keep) + keep]


def _header_length(data: bytes, keep: int) -> int:
    ends = [
        found + len(end)
        for end in _HEADER_ENDS
        if (found := data.find(end, 0, keep + len(end))) >= 0
    ]
    return min(ends) if ends else keep


def keep_refused(conn: Connection, store: BlobStore, data: bytes, keep: int) -> tuple[str, str]:
    """Store what a refusal keeps of `data`, pinned for this transaction;
    its digest, and the note for the row's reason ("" when nothing was cut)."""
    excerpt = refused_excerpt(data, keep)
    digest = hashlib.sha256(excerpt).hexdigest()
    pin_stored(conn, store, [(digest, excerpt)])
    if len(excerpt) == len(data):
        return digest, ""
    return digest, f" [raw message cut: header and start, {len(excerpt)} of {len(data)} bytes]"


def unnamed_blobs(
    raw: str, attachments: Iterable[str], statuses: Collection[InboundStatus | None]
) -> set[str]:
    """What a delivered message wrote that its rows do not name: the full
    bytes when every group refused it (the rows name an excerpt), the
    attachments when no group posted it. Nothing when a group deferred it:
    the retry will want them. Another row may still name them (the deletion
    checks)."""
    if None in statuses:
        return set()
    unnamed = set() if InboundStatus.ACCEPTED in statuses else set(attachments)
    if set(statuses) == {InboundStatus.REJECTED}:
        unnamed.add(raw)
    return unnamed
