"""The rows every delivery leaves behind: its inbound-log row and its events.

They are collected while a batch is written and inserted once at its end
(two statements a batch instead of two a message); a message written in a
savepoint keeps its own journal, added to the batch's only if it succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert

from feed.base import utcnow
from feed.events import EventKind, insert_events
from feed.inbound import InboundLog, InboundStatus
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.decoding import without_nul
from mailbridge.pipeline.route import Route
from mailbridge.pipeline.thread import storable_id
from mailbridge.pipeline.types import RawMessage

_INSERT_LOG = insert(InboundLog)


@dataclass
class Journal:
    inbound: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, kind: EventKind, **payload: Any) -> None:
        self.events.append({"kind": str(kind), "payload": payload, "created_at": utcnow()})

    def received(
        self,
        raw: RawMessage,
        message: ParsedMessage | None,
        sha256: str | None,
        status: InboundStatus,
        reason: str,
        route: Route | None = None,
        post_id: int | None = None,
        size: int = 0,
        recipients: tuple[str, ...] = (),
    ) -> None:
        """The inbound-log row of a message (or of a refusal before its content)."""
        self.inbound.append(
            {
                "received_at": utcnow(),
                "source": str(raw.source),
                # The envelope is the peer's word: a NUL in it (which
                # PostgreSQL refuses) must not fail the batch's log.
                "remote": without_nul(raw.envelope.remote)[:255],
                "mail_from": without_nul(raw.envelope.mail_from)[:998],
                "rcpt_to": without_nul(
                    ",".join(route.recipients if route else recipients or raw.envelope.rcpt_tos)
                ),
                "message_id": (
                    storable_id(message.message_id) if message and message.message_id else None
                ),
                "subject": (message.subject[:998] if message else ""),
                "sha256": sha256,
                "size": len(raw.data) or size,
                "status": str(status),
                "reason": reason,
                "group_id": route.group_id if route else None,
                "post_id": post_id,
            }
        )

    def add(self, other: Journal) -> None:
        self.inbound.extend(other.inbound)
        self.events.extend(other.events)

    def write(self, conn: Connection) -> None:
        if self.inbound:
            conn.execute(_INSERT_LOG, self.inbound)
        if self.events:
            insert_events(conn, self.events)
