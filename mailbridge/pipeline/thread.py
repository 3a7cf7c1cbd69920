"""Thread: which thread (and parent post) an inbound message belongs to.

Incremental JWZ threading over the database, in this order:
1. the nearest ancestor in In-Reply-To/References that we know (inbound mail
   or our own outgoing posts: both are posts with a Message-ID);
2. posts that name this message or one of its ancestors in their own
   references: replies that arrived before their parent, or siblings whose
   common parent never reached us (JWZ's dummy containers, kept as rows);
3. Outlook's Thread-Index conversation, for clients that drop References;
4. a reply-prefixed subject matching a recently active thread of the group,
   for mail whose references are absent or all unknown (a reply whose parent
   never reached us: fedora-devel has both kinds).
A message joins one thread and never merges two: its References are the
sender's word, and through an open binding anyone's (naming two threads must
not fold one into the other). With a known ancestor it joins its thread;
otherwise it may join the thread of replies waiting for it and adopt those
that have no parent yet. A post that has a parent is never re-parented.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from feed.groups import Group
from feed.posts import Post, PostReference
from feed.threads import Thread
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.types import Ignore
from mailbridge.threader import (
    is_reply_subject,
    normalize_subject,
    parse_thread_index,
    references_chain,
)

# A References header can be arbitrarily long; the newest ancestors matter.
MAX_REFERENCES = 100
SUBJECT_KEY_LENGTH = 255
MAX_ID_LENGTH = 250
SUBJECT_FALLBACK_WINDOW = timedelta(days=30)

# Built once: every delivery runs these (see bench/RESULTS.md).
_GROUP_LOCKS = (
    select(Group.id)
    .where(Group.id.in_(bindparam("ids", expanding=True)))
    .order_by(Group.id)
    .with_for_update()
)
_KNOWN_POSTS = select(Post.id, Post.thread_id, Post.message_id).where(
    Post.group_id == bindparam("group_id"), Post.message_id.in_(bindparam("ids", expanding=True))
)
_REFERRING_POSTS = (
    select(Post.thread_id, PostReference.post_id, PostReference.message_id, PostReference.is_parent)
    .join(Post, PostReference.post_id == Post.id)
    .where(
        PostReference.group_id == bindparam("group_id"),
        PostReference.message_id.in_(bindparam("ids", expanding=True)),
    )
)
_THREAD_BY_CONVERSATION = (
    select(Post.thread_id)
    .where(Post.group_id == bindparam("group_id"), Post.conversation_key == bindparam("key"))
    .order_by(Post.id)
    .limit(1)
)
_THREAD_BY_SUBJECT = (
    select(Thread.id)
    .where(
        Thread.group_id == bindparam("group_id"),
        Thread.subject_key == bindparam("key"),
        Thread.last_activity_at >= bindparam("since"),
    )
    .order_by(Thread.last_activity_at.desc())
    .limit(1)
)


@dataclass(frozen=True)
class Placement:
    """Where the post goes: an existing thread (or None: start one) and parent."""

    thread_id: int | None
    parent_id: int | None
    chain: tuple[str, ...]
    subject_key: str
    conversation_key: bytes | None
    # Replies in the same thread that arrived first and name this message
    # as their parent (adopted only while they have none).
    orphan_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Ancestor:
    """The nearest known post in a message's references: id and thread only."""

    id: int
    thread_id: int


def derive_message_id(message: ParsedMessage) -> str:
    """A stable id for mail that has none (RFC 5322 §3.6.4 only says SHOULD).

    Hashes what every door sees the same (sender, date, subject, body), not
    the raw bytes, which relays change by adding Received headers.
    """
    digest = hashlib.sha256()
    for part in (
        message.sender.email if message.sender else "",
        message.header("Date") or "",
        message.subject,
        message.text or "",
        message.html or "",
    ):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return f"derived.{digest.hexdigest()[:40]}@mailbridge.invalid"


def lock_groups_for_threading(conn: Connection, group_ids: Iterable[int]) -> None:
    """Serialise deliveries into these groups until this transaction ends.

    Under READ COMMITTED (PostgreSQL) two concurrent deliveries of a message
    and its reply would not see each other and would start two threads; the
    group row locks make the second wait for the first's commit. A batch
    takes its locks in one statement in id order, so two batches never wait
    on each other in a cycle. SQLite's BEGIN IMMEDIATE already serialises
    writers and ignores FOR UPDATE.
    """
    ids = sorted(set(group_ids))
    if ids:
        conn.execute(_GROUP_LOCKS, {"ids": ids})


def storable_id(message_id: str) -> str:
    """The id as stored: itself, or a stable stand-in when it is too long to index.

    RFC 5322 sets no length on a Message-ID, but a column must; a longer id is
    replaced by a hash of itself, the same for the message and for every
    reference to it, so threading and duplicate detection still match.
    """
    if len(message_id) <= MAX_ID_LENGTH:
        return message_id
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"long.{digest}@mailbridge.invalid"


def subject_key(subject: str) -> str:
    return normalize_subject(subject)[:SUBJECT_KEY_LENGTH]


def resolve_thread(
    conn: Connection, message: ParsedMessage, message_id: str, group_id: int, now: datetime
) -> Placement:
    """Where the message goes; `Ignore` when the group already holds its Message-ID."""
    chain = tuple(
        dict.fromkeys(
            storable_id(ref)
            for ref in references_chain(
                message.in_reply_to, message.references, message_id=message_id
            )[-MAX_REFERENCES:]
        )
    )
    key = subject_key(message.subject)
    conversation = _conversation_key(message.thread_index)
    parent = _nearest_known_ancestor(conn, group_id, message_id, chain)
    sharing, orphans = _posts_sharing_references(conn, group_id, message_id, chain)
    if parent is not None:
        target: int | None = parent.thread_id
    else:  # the waiting replies' thread first, then their siblings'
        target = min(orphans.values(), default=None) or min(sharing, default=None)
    if target is None and conversation is not None:
        target = _first_thread(conn, _THREAD_BY_CONVERSATION, group_id, key=conversation)
    if target is None and is_reply_subject(message.subject) and key:
        since = now - SUBJECT_FALLBACK_WINDOW
        target = _first_thread(conn, _THREAD_BY_SUBJECT, group_id, key=key, since=since)
    adopted = tuple(sorted(post for post, thread in orphans.items() if thread == target))
    return Placement(target, parent.id if parent else None, chain, key, conversation, adopted)


def _conversation_key(thread_index: str | None) -> bytes | None:
    parsed = parse_thread_index(thread_index) if thread_index else None
    return parsed[0] if parsed else None


def _nearest_known_ancestor(
    conn: Connection, group_id: int, message_id: str, chain: tuple[str, ...]
) -> Ancestor | None:
    """The nearest post of the chain we hold; `Ignore` if we hold the message itself.

    One query answers both: the same Message-ID never makes a second post in
    a group, whichever door it came through.
    """
    ids = [message_id, *chain]
    rows = conn.execute(_KNOWN_POSTS, {"group_id": group_id, "ids": ids}).all()
    for row in rows:
        if row.message_id == message_id:
            raise Ignore(f"duplicate of post {row.id} (same Message-ID)")
    position = {mid: i for i, mid in enumerate(chain)}
    nearest = max(rows, key=lambda row: position[row.message_id], default=None)
    return Ancestor(nearest.id, nearest.thread_id) if nearest else None


def _posts_sharing_references(
    conn: Connection, group_id: int, message_id: str, chain: tuple[str, ...]
) -> tuple[set[int], dict[int, int]]:
    """Threads of posts that reference this message or its ancestors, and the
    posts among them whose direct parent is this message, with their thread."""
    ids = sorted({*chain, message_id})
    rows = conn.execute(_REFERRING_POSTS, {"group_id": group_id, "ids": ids}).all()
    threads = {row.thread_id for row in rows}
    orphans = {
        row.post_id: row.thread_id for row in rows if row.is_parent and row.message_id == message_id
    }
    return threads, orphans


def _first_thread(conn: Connection, query: Select[Any], group_id: int, **params: Any) -> int | None:
    thread_id: int | None = conn.execute(query, {"group_id": group_id, **params}).scalar()
    return thread_id
