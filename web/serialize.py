"""The JSON shapes of the API, built from `web.records`."""

from __future__ import annotations

import json
from typing import Any

from flask import url_for

from web.records import (
    AttachmentInfo,
    GroupSummary,
    InboundEntry,
    PostView,
    ThreadHead,
    ThreadSummary,
)

Json = dict[str, Any]


def group_json(group: GroupSummary) -> Json:
    return {
        "slug": group.slug,
        "name": group.name,
        "private": group.private,
        "member": group.member,
    }


def thread_summary_json(thread: ThreadSummary) -> Json:
    return {
        "id": thread.id,
        "subject": thread.subject,
        "post_count": thread.post_count,
        "last_activity": thread.last_activity.isoformat(),
    }


def thread_json(thread: ThreadHead, posts: list[Json], next_cursor: str | None) -> Json:
    return {
        "id": thread.id,
        "subject": thread.subject,
        "group": thread.group_slug,
        "posts": posts,
        "next": next_cursor,
    }


def post_json(post: PostView) -> Json:
    return {
        "id": post.id,
        "parent_id": post.parent_id,
        "author": {"email": post.author_email, "name": post.author_name},
        "source": post.source,
        "message_id": post.message_id,
        "body_text": post.body_text,
        "elided_text": post.elided_text,
        "created_at": post.created_at.isoformat(),
        "attachments": [attachment_json(a) for a in post.attachments],
        # In a list, a long text is cut (`truncated`); `url` gives the whole post.
        "truncated": post.truncated,
        "url": url_for("api.post", post_id=post.id),
    }


def whole_post_json(post: PostView) -> Json:
    return {**post_json(post), "thread_id": post.thread_id}


def json_size(value: Json) -> int:
    """Bytes `value` takes in a response (Flask escapes non-ASCII, as here)."""
    return len(json.dumps(value, separators=(",", ":")))


def attachment_json(attachment: AttachmentInfo) -> Json:
    return {
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "url": url_for("api.attachment", attachment_id=attachment.id),
    }


def inbound_json(entry: InboundEntry) -> Json:
    return {
        "id": entry.id,
        "received_at": entry.received_at.isoformat(),
        "source": entry.source,
        "mail_from": entry.mail_from,
        "rcpt_to": list(entry.rcpt_to),
        "message_id": entry.message_id,
        "subject": entry.subject,
        "status": entry.status,
        "reason": entry.reason,
        "group": entry.group_slug,
        "post_id": entry.post_id,
        "size": entry.size,
        # What is kept of the message (all of it, or a refused message's
        # headers and first bytes); null once past its retention.
        "raw_url": f"/api/v1/inbound/{entry.id}/raw" if entry.has_raw else None,
    }
