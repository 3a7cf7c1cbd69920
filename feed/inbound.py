"""The inbound log: every message received, with what became of it and why."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from feed.base import Base, UTCDateTime, utcnow


class InboundStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    HELD = "held"
    IGNORED = "ignored"
    # For the administrators: mail to postmaster@ a local domain (RFC 5321
    # §4.5.1), kept with its raw bytes, never posted to a group.
    POSTMASTER = "postmaster"


class InboundLog(Base):
    __tablename__ = "inbound_log"
    __table_args__ = (Index("ix_inbound_log_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(16))  # smtp | lmtp | imap | import
    remote: Mapped[str] = mapped_column(String(255), default="")
    mail_from: Mapped[str] = mapped_column(String(998), default="")
    rcpt_to: Mapped[str] = mapped_column(Text, default="")  # comma-separated
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    subject: Mapped[str] = mapped_column(String(998), default="")
    # The raw message in the blob store; None for a rejection before DATA.
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL"), index=True
    )
    post_id: Mapped[int | None] = mapped_column(
        ForeignKey("posts.id", ondelete="SET NULL"), index=True
    )
