"""What the queries hand to views and templates: plain frozen records.

A reader session expires its ORM objects when it ends, so nothing mapped
leaves `web.queries`; these records do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class GroupSummary:
    id: int
    slug: str
    name: str
    private: bool
    member: bool


@dataclass(frozen=True)
class ThreadSummary:
    id: int
    subject: str
    post_count: int
    last_activity: datetime


@dataclass(frozen=True)
class ThreadHead:
    id: int
    subject: str
    group_slug: str
    group_name: str


@dataclass(frozen=True)
class AttachmentInfo:
    id: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class PostView:
    id: int
    thread_id: int
    parent_id: int | None
    author_email: str
    author_name: str
    source: str
    message_id: str
    body_text: str
    elided_text: str
    created_at: datetime
    attachments: tuple[AttachmentInfo, ...]
    # A text was cut for a list; the whole post is at its own URL.
    truncated: bool = False


@dataclass(frozen=True)
class AttachmentFile:
    """An attachment to download: its name, type and blob."""

    id: int
    filename: str
    content_type: str
    sha256: str


@dataclass(frozen=True)
class InboundEntry:
    id: int
    received_at: datetime
    source: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    message_id: str | None
    subject: str
    status: str
    reason: str
    group_slug: str | None
    post_id: int | None
    size: int  # bytes received (what is kept of refused mail may be less)
    has_raw: bool
