"""Read queries behind the pages and the API, each filtered by `web.access`.

Every list is keyset-paged on an index (`ix_threads_group_activity`,
`ix_posts_thread_created`, the inbound log's primary key or
`ix_inbound_log_status_id`) and fetches `limit + 1` rows to know whether a
next page exists. Attachments are loaded with `selectinload`: one extra
query per page, never one per post. Authors are denormalised on the post.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, SQLColumnExpression, exists, func, select, tuple_
from sqlalchemy.orm import Session, defer, selectinload

from feed.groups import Group, Membership
from feed.inbound import InboundLog, InboundStatus
from feed.posts import Attachment, Post
from feed.threads import Thread
from feed.users import User
from web.access import Viewer, visible_groups
from web.paging import Page, Position, take_page
from web.records import (
    AttachmentFile,
    AttachmentInfo,
    GroupSummary,
    InboundEntry,
    PostView,
    ThreadHead,
    ThreadSummary,
)


def find_viewer(session: Session, user_id: int) -> Viewer | None:
    row = session.execute(select(User.id, User.is_admin).where(User.id == user_id)).first()
    return Viewer(row.id, row.is_admin) if row else None


def list_groups(session: Session, viewer: Viewer) -> list[GroupSummary]:
    return _group_summaries(session, viewer)


def find_group(session: Session, viewer: Viewer, slug: str) -> GroupSummary | None:
    found = _group_summaries(session, viewer, Group.slug == slug)
    return found[0] if found else None


def _group_summaries(
    session: Session, viewer: Viewer, *criteria: ColumnElement[bool]
) -> list[GroupSummary]:
    member = exists().where(Membership.group_id == Group.id, Membership.user_id == viewer.user_id)
    rows = session.execute(
        select(Group.id, Group.slug, Group.name, Group.is_private, member)
        .where(visible_groups(viewer), *criteria)
        .order_by(Group.name, Group.slug)
    )
    return [
        GroupSummary(g_id, slug, name, private, is_member)
        for g_id, slug, name, private, is_member in rows
    ]


def list_threads(
    session: Session, group_id: int, after: Position | None, limit: int
) -> Page[ThreadSummary]:
    """A group's threads, newest activity first."""
    query = select(Thread.id, Thread.subject, Thread.post_count, Thread.last_activity_at).where(
        Thread.group_id == group_id
    )
    if after is not None:
        query = query.where(tuple_(Thread.last_activity_at, Thread.id) < (after.at, after.id))
    query = query.order_by(Thread.last_activity_at.desc(), Thread.id.desc()).limit(limit + 1)
    rows = [ThreadSummary(*row) for row in session.execute(query)]
    return take_page(rows, limit, lambda t: Position(t.last_activity, t.id))


def find_thread(session: Session, viewer: Viewer, thread_id: int) -> ThreadHead | None:
    row = session.execute(
        select(Thread.id, Thread.subject, Group.slug, Group.name)
        .join(Group, Thread.group_id == Group.id)
        .where(Thread.id == thread_id, visible_groups(viewer))
    ).first()
    return ThreadHead(*row) if row else None


def list_posts(
    session: Session,
    thread_id: int,
    after: Position | None,
    limit: int,
    excerpt: int | None = None,
) -> Page[PostView]:
    """A thread's posts in the order they arrived.

    With `excerpt`, each text is read from the database cut to that many
    characters (a post may hold megabytes: a page of them is never loaded
    whole) and the post is marked `truncated` when anything was cut.
    """
    body, elided = _texts(excerpt)
    query = (
        select(Post, body, elided)
        .where(Post.thread_id == thread_id)
        .options(*_WITHOUT_TEXTS, selectinload(Post.attachments))
    )
    if after is not None:
        query = query.where(tuple_(Post.created_at, Post.id) > (after.at, after.id))
    query = query.order_by(Post.created_at, Post.id).limit(limit + 1)
    rows = [
        _post_view(post, _cut(text, excerpt), _cut(quoted, excerpt))
        for post, text, quoted in session.execute(query)
    ]
    return take_page(rows, limit, post_position)


def post_position(post: PostView) -> Position:
    return Position(post.created_at, post.id)


def find_post(session: Session, viewer: Viewer, post_id: int) -> PostView | None:
    """One post whole, if its group is visible to `viewer`."""
    post = session.scalars(
        select(Post)
        .join(Group, Post.group_id == Group.id)
        .where(Post.id == post_id, visible_groups(viewer))
        .options(defer(Post.body_html), selectinload(Post.attachments))
    ).first()
    return _post_view(post, (post.body_text, False), (post.elided_text, False)) if post else None


# `body_html` is never shown; the texts are selected on their own (see `_texts`).
_WITHOUT_TEXTS = defer(Post.body_text), defer(Post.elided_text), defer(Post.body_html)


def _texts(excerpt: int | None) -> tuple[SQLColumnExpression[str], SQLColumnExpression[str]]:
    """The two texts, or their first `excerpt + 1` characters (one more than
    kept, to know whether anything was cut); substr() counts characters on
    SQLite and PostgreSQL alike."""
    if excerpt is None:
        return Post.body_text, Post.elided_text
    return (
        func.substr(Post.body_text, 1, excerpt + 1),
        func.substr(Post.elided_text, 1, excerpt + 1),
    )


def _cut(text: str, excerpt: int | None) -> tuple[str, bool]:
    if excerpt is None or len(text) <= excerpt:
        return text, False
    return text[:excerpt], True


def _post_view(post: Post, body: tuple[str, bool], elided: tuple[str, bool]) -> PostView:
    return PostView(
        id=post.id,
        thread_id=post.thread_id,
        parent_id=post.parent_id,
        author_email=post.author_email,
        author_name=post.author_name,
        source=post.source,
        message_id=post.message_id,
        body_text=body[0],
        elided_text=elided[0],
        created_at=post.created_at,
        attachments=tuple(
            AttachmentInfo(a.id, a.filename, a.content_type, a.size) for a in post.attachments
        ),
        truncated=body[1] or elided[1],
    )


def find_attachment(session: Session, viewer: Viewer, attachment_id: int) -> AttachmentFile | None:
    row = session.execute(
        select(Attachment.id, Attachment.filename, Attachment.content_type, Attachment.sha256)
        .join(Post, Attachment.post_id == Post.id)
        .join(Group, Post.group_id == Group.id)
        .where(Attachment.id == attachment_id, visible_groups(viewer))
    ).first()
    return AttachmentFile(*row) if row else None


def list_inbound(
    session: Session, status: InboundStatus | None, after: Position | None, limit: int
) -> Page[InboundEntry]:
    """The inbound log, newest first (callers check `can_read_inbound`)."""
    query = select(InboundLog, Group.slug).outerjoin(Group, InboundLog.group_id == Group.id)
    if status is not None:
        query = query.where(InboundLog.status == str(status))
    if after is not None:
        query = query.where(InboundLog.id < after.id)
    query = query.order_by(InboundLog.id.desc()).limit(limit + 1)
    rows = [_inbound_entry(row, slug) for row, slug in session.execute(query)]
    return take_page(rows, limit, lambda e: Position(None, e.id))


def find_inbound_raw(session: Session, entry_id: int) -> AttachmentFile | None:
    """The raw message kept for an inbound-log entry, as a download (callers
    check `can_read_inbound`); None when the entry has no bytes (refused before
    DATA, or past its retention)."""
    sha256 = session.scalar(select(InboundLog.sha256).where(InboundLog.id == entry_id))
    if sha256 is None:
        return None
    return AttachmentFile(entry_id, f"inbound-{entry_id}.eml", "message/rfc822", sha256)


def _inbound_entry(row: InboundLog, group_slug: str | None) -> InboundEntry:
    return InboundEntry(
        id=row.id,
        received_at=row.received_at,
        source=row.source,
        mail_from=row.mail_from,
        rcpt_to=tuple(address for address in row.rcpt_to.split(",") if address),
        message_id=row.message_id,
        subject=row.subject,
        status=row.status,
        reason=row.reason,
        group_slug=group_slug,
        post_id=row.post_id,
        size=row.size,
        has_raw=row.sha256 is not None,
    )
