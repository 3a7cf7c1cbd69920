"""Threads: a conversation in one group's feed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from feed.base import Base, UTCDateTime, utcnow
from feed.groups import Group


class Thread(Base):
    __tablename__ = "threads"
    __table_args__ = (
        # The group page: newest activity first, keyset-paged on (last_activity_at, id).
        Index("ix_threads_group_activity", "group_id", "last_activity_at", "id"),
        # The subject fallback of threading: same group, same subject, recent.
        Index("ix_threads_group_subject", "group_id", "subject_key", "last_activity_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(998))
    # normalize_subject(subject), truncated: what replies without references match on.
    subject_key: Mapped[str] = mapped_column(String(255))
    post_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    group: Mapped[Group] = relationship()
