"""Every model, imported once so that `Base.metadata` is complete (Alembic, tests)."""

from __future__ import annotations

from feed.base import Base
from feed.bindings import Binding, ImapBinding
from feed.events import Event
from feed.groups import Group, Membership
from feed.inbound import InboundLog
from feed.posts import Attachment, Post, PostReference
from feed.threads import Thread
from feed.users import ApiToken, User, UserAddress

__all__ = [
    "ApiToken",
    "Attachment",
    "Base",
    "Binding",
    "Event",
    "Group",
    "ImapBinding",
    "InboundLog",
    "Membership",
    "Post",
    "PostReference",
    "Thread",
    "User",
    "UserAddress",
]
