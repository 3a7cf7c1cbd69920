"""Posts, the ids they reference, and their attachments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from feed.base import Base, UTCDateTime, utcnow
from feed.threads import Thread
from feed.users import User


class Post(Base):
    """One message in a thread, from mail or from the web.

    `message_id` is the RFC 5322 Message-ID without angle brackets: the mail's
    own, or the one we gave a web post when mailing it out. It is unique per
    group, which is what makes delivery idempotent whatever the door.
    """

    __tablename__ = "posts"
    __table_args__ = (
        UniqueConstraint("group_id", "message_id"),
        Index("ix_posts_thread_created", "thread_id", "created_at", "id"),
        Index("ix_posts_group_created", "group_id", "created_at"),
        Index("ix_posts_group_conversation", "group_id", "conversation_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("posts.id", ondelete="SET NULL"), index=True
    )
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    author_email: Mapped[str] = mapped_column(String(320))
    author_name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(8))  # "email" | "web"
    message_id: Mapped[str] = mapped_column(String(998), index=True)
    subject: Mapped[str] = mapped_column(String(998))
    body_text: Mapped[str] = mapped_column(Text)
    elided_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str | None] = mapped_column(Text)
    # Outlook's Thread-Index conversation (first 22 bytes), for clients that drop References.
    conversation_key: Mapped[bytes | None] = mapped_column(LargeBinary(22))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    thread: Mapped[Thread] = relationship()
    author: Mapped[User | None] = relationship()
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="post", cascade="all, delete-orphan", order_by="Attachment.id"
    )


class PostReference(Base):
    """A Message-ID that a post names in In-Reply-To/References.

    Lets a parent that arrives after its replies (or a reply whose parent
    never arrives) find its thread: JWZ's dummy containers, kept in a table.
    """

    __tablename__ = "post_references"
    __table_args__ = (Index("ix_post_references_group_message", "group_id", "message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(998))
    # The last id of the chain: the post's direct parent, so a parent that
    # arrives late can adopt its replies.
    is_parent: Mapped[bool] = mapped_column(default=False)


class Attachment(Base):
    """A file attached to a post; the bytes live in the blob store by SHA-256."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    content_id: Mapped[str | None] = mapped_column(String(255))
    inline: Mapped[bool] = mapped_column(default=False)

    post: Mapped[Post] = relationship(back_populates="attachments")
