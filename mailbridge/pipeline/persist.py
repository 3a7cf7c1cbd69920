"""Persist: the post, its attachments, references, inbound-log row and event.

Runs inside the delivery's transaction; blobs were already written, so the
commit is the single moment the message becomes durable (and only then may
the door answer 250).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from feed.events import EventKind, append_event
from feed.posts import Attachment, Post, PostReference
from feed.threads import Thread
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.authorize import Author
from mailbridge.pipeline.extract import Content
from mailbridge.pipeline.thread import Placement

MAX_SUBJECT = 998  # RFC 5322 §2.1.1 line limit
MAX_ADDRESS = 320  # RFC 5321 §4.5.3.1: 64-octet local part, 255-octet domain


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


def persist_post(session: Session, new: NewPost) -> Post:
    thread = _thread_for(session, new)
    post = Post(
        thread_id=thread.id,
        group_id=new.group_id,
        parent_id=new.placement.parent_id,
        author_id=new.author.user_id,
        author_email=new.author.email[:MAX_ADDRESS],
        author_name=new.author.name[:200],
        source="email",
        message_id=new.message_id,
        subject=new.message.subject[:MAX_SUBJECT],
        body_text=new.content.text,
        elided_text=new.content.elided,
        body_html=new.content.html,
        conversation_key=new.placement.conversation_key,
        sent_at=new.message.date,
        created_at=new.received_at,
    )
    for part, digest in zip(new.content.attachments, new.attachment_digests, strict=True):
        post.attachments.append(
            Attachment(
                filename=part.filename[:255],
                content_type=part.content_type[:255],
                size=len(part.data),
                sha256=digest,
                content_id=part.content_id[:255] if part.content_id else None,
                inline=part.inline,
            )
        )
    session.add(post)
    session.flush()
    _record_references(session, post, new.placement.chain)
    _adopt_orphans(session, post, new.placement.orphan_ids)
    thread.post_count += 1
    thread.last_activity_at = max(thread.last_activity_at, new.received_at)
    append_event(
        session,
        EventKind.POST_CREATED,
        post_id=post.id,
        thread_id=thread.id,
        group_id=new.group_id,
    )
    return post


def _thread_for(session: Session, new: NewPost) -> Thread:
    placement = new.placement
    if placement.thread_id is None:
        thread = Thread(
            group_id=new.group_id,
            subject=new.message.subject[:MAX_SUBJECT] or "(no subject)",
            subject_key=placement.subject_key,
            post_count=0,
            created_at=new.received_at,
            last_activity_at=new.received_at,
        )
        session.add(thread)
        session.flush()
        return thread
    thread = session.get_one(Thread, placement.thread_id, with_for_update=True)
    for other_id in placement.merge_thread_ids:
        _merge_into(session, thread, other_id)
    return thread


def _merge_into(session: Session, target: Thread, other_id: int) -> None:
    """Two threads turned out to be one conversation: move the posts over."""
    other = session.get_one(Thread, other_id, with_for_update=True)
    session.execute(update(Post).where(Post.thread_id == other.id).values(thread_id=target.id))
    # The conversation is named by its oldest message: decide before the dates merge.
    if other.created_at < target.created_at or target.subject == "(no subject)":
        target.subject, target.subject_key = other.subject, other.subject_key
    target.post_count += other.post_count
    target.created_at = min(target.created_at, other.created_at)
    target.last_activity_at = max(target.last_activity_at, other.last_activity_at)
    session.delete(other)
    append_event(
        session,
        EventKind.THREADS_MERGED,
        thread_id=target.id,
        merged_thread_id=other_id,
        group_id=target.group_id,
    )


def _record_references(session: Session, post: Post, chain: tuple[str, ...]) -> None:
    if not chain:
        return
    rows = [
        {
            "post_id": post.id,
            "group_id": post.group_id,
            "message_id": message_id,
            "is_parent": position == len(chain) - 1,
        }
        for position, message_id in enumerate(chain)
    ]
    session.execute(insert(PostReference), rows)


def _adopt_orphans(session: Session, post: Post, orphan_ids: tuple[int, ...]) -> None:
    """Replies that arrived before this post and name it as parent now point to it."""
    if not orphan_ids:
        return
    session.execute(
        update(Post)
        .where(Post.id.in_(orphan_ids), Post.parent_id.is_(None))
        .values(parent_id=post.id)
        .execution_options(synchronize_session=False)
    )
