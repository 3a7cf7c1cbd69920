"""Bindings: which address feeds which group, and who may post through it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
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
