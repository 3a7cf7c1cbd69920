"""The event log: the transactional outbox that the indexer and notifier read.

Services append an event in the same transaction as the change it describes;
consumers read in id order and keep their own cursor.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, Integer, String, insert
from sqlalchemy.orm import Mapped, mapped_column

from feed.base import Base, UTCDateTime, utcnow


class EventKind(enum.StrEnum):
    POST_CREATED = "post.created"


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Add events ({"kind", "payload", "created_at"}) to the current
    transaction: committed with the change they describe, never alone."""
    conn.execute(_INSERT_EVENT, rows)


_INSERT_EVENT = insert(Event)
