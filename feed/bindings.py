"""Bindings: which address or IMAP mailbox feeds which group, and who may post through it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from feed.base import Base, UTCDateTime, utcnow
from feed.groups import Group


class Binding(Base):
    """An address bound to a group.

    `sender_policy` is `members`, `anyone` or `domain:example.com`
    (see feed.policy for its meaning).
    """

    __tablename__ = "bindings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    # The domain alone, indexed: deciding "local recipient or relay attempt" is one lookup.
    domain: Mapped[str] = mapped_column(String(255), index=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    sender_policy: Mapped[str] = mapped_column(String(300), default="members")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    group: Mapped[Group] = relationship()


class ImapBinding(Base):
    """A mailbox on an IMAP server whose new messages feed a group.

    The sync cursor (`uidvalidity`, `last_uid`) moves in the same transaction
    as the posts it covers (RFC 3501 §2.3.1.1: a UID names a message only
    together with its folder's UIDVALIDITY), so a crash never loses or
    repeats a message. `stuck_uid` / `stuck_attempts` count the failed
    attempts at the first message that would not go through, so that it is
    given up after a bounded number instead of blocking the folder.
    """

    __tablename__ = "imap_bindings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    sender_policy: Mapped[str] = mapped_column(String(300), default="members")
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    tls: Mapped[str] = mapped_column(String(16), default="implicit")  # implicit | none
    username: Mapped[str] = mapped_column(String(320))
    password_sealed: Mapped[str] = mapped_column(Text)  # Fernet token, see feed.credentials
    folder: Mapped[str] = mapped_column(String(255), default="INBOX")
    after_import: Mapped[str] = mapped_column(String(270), default="seen")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    stuck_uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stuck_attempts: Mapped[int] = mapped_column(Integer, default=0)

    state: Mapped[str] = mapped_column(String(32), default="new")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    group: Mapped[Group] = relationship()
