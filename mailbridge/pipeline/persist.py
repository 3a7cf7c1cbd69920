"""Persist: the post, its attachments, references, inbound-log row and event.

Runs inside the delivery's transaction; blobs were already written, so the
commit is the single moment the message becomes durable (and only then may
the door answer 250).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, case, insert, update

from feed.base import UTCDateTime
from feed.events import EventKind
from feed.posts import Attachment, Post, PostReference
from feed.threads import Thread
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.authorize import Author
from mailbridge.pipeline.extract import Content
from mailbridge.pipeline.journal import Journal
from mailbridge.pipeline.thread import Placement

MAX_SUBJECT = 998  # RFC 5322 §2.1.1 line limit
MAX_ADDRESS = 320  # RFC 5321 §4.5.3.1: 64-octet local part, 255-octet domain
NO_SUBJECT = "(no subject)"


@dataclass(frozen=True)
class NewPost:
    group_id: int
    message_id: str
    message: ParsedMessage
    author: Author
    placement: Placement
    content: Content
    attachment_digests: tuple[str, ...]
    received_at: datetime


def persist_post(conn: Connection, new: NewPost, journal: Journal) -> int:
    """Insert the post and what hangs off it; the new post's id. Its events
    go to `journal`, written with the batch."""
    thread_id = _thread_for(conn, new)
    post_id: int = conn.execute(
        _INSERT_POST,
        {
            "thread_id": thread_id,
            "group_id": new.group_id,
            "parent_id": new.placement.parent_id,
            "author_id": new.author.user_id,
            "author_email": new.author.email[:MAX_ADDRESS],
            "author_name": new.author.name[:200],
            "source": "email",
            "message_id": new.message_id,
            "subject": new.message.subject[:MAX_SUBJECT],
            "body_text": new.content.text,
            "elided_text": new.content.elided,
            "body_html": new.content.html,
            "conversation_key": new.placement.conversation_key,
            "sent_at": new.message.date,
            "created_at": new.received_at,
        },
    ).scalar_one()
    _record_attachments(conn, post_id, new)
    _record_references(conn, post_id, new.group_id, new.placement.chain)
    if new.placement.orphan_ids:
        conn.execute(_ADOPT_ORPHANS, {"parent": post_id, "ids": new.placement.orphan_ids})
    conn.execute(_BUMP_THREAD, {"tid": thread_id, "at": new.received_at})
    journal.event(
        EventKind.POST_CREATED, post_id=post_id, thread_id=thread_id, group_id=new.group_id
    )
    return post_id


def _thread_for(conn: Connection, new: NewPost) -> int:
    placement = new.placement
    if placement.thread_id is None:
        thread_id: int = conn.execute(
            _INSERT_THREAD,
            {
                "group_id": new.group_id,
                "subject": new.message.subject[:MAX_SUBJECT] or NO_SUBJECT,
                "subject_key": placement.subject_key,
                "post_count": 0,
                "created_at": new.received_at,
                "last_activity_at": new.received_at,
            },
        ).scalar_one()
        return thread_id
    return placement.thread_id


def _record_attachments(conn: Connection, post_id: int, new: NewPost) -> None:
    rows = [
        {
            "post_id": post_id,
            "filename": part.filename[:255],
            "content_type": part.content_type[:255],
            "size": len(part.data),
            "sha256": digest,
            "content_id": part.content_id[:255] if part.content_id else None,
            "inline": part.inline,
        }
        for part, digest in zip(new.content.attachments, new.attachment_digests, strict=True)
    ]
    if rows:
        conn.execute(_INSERT_ATTACHMENT, rows)


def _record_references(
    conn: Connection, post_id: int, group_id: int, chain: tuple[str, ...]
) -> None:
    rows = [
        {
            "post_id": post_id,
            "group_id": group_id,
            "message_id": message_id,
            "is_parent": position == len(chain) - 1,
        }
        for position, message_id in enumerate(chain)
    ]
    if rows:
        conn.execute(_INSERT_REFERENCE, rows)


# Built once: every delivery runs these (see bench/RESULTS.md).
_INSERT_POST = insert(Post).returning(Post.id)
_INSERT_THREAD = insert(Thread).returning(Thread.id)
_INSERT_ATTACHMENT = insert(Attachment)
_INSERT_REFERENCE = insert(PostReference)
# Replies that arrived before this post and name it as parent now point to it.
_ADOPT_ORPHANS = (
    update(Post)
    .where(Post.id.in_(bindparam("ids", expanding=True)), Post.parent_id.is_(None))
    .values(parent_id=bindparam("parent"))
)
_AT = bindparam("at", type_=UTCDateTime())
_BUMP_THREAD = (
    update(Thread)
    .where(Thread.id == bindparam("tid"))
    .values(
        post_count=Thread.post_count + 1,
        last_activity_at=case((Thread.last_activity_at < _AT, _AT), else_=Thread.last_activity_at),
    )
)
