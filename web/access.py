"""Who may see what: the one visibility rule of the web app and the API.

A public group is visible to every signed-in user; a private group only to
its members; administrators see every group. Threads, posts and attachments
are visible exactly when their group is. Every query that reads feed content
filters on `visible_groups()`, so an invisible group is indistinguishable
from a missing one (404, never 403).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select, true

from feed.groups import Group, Membership


@dataclass(frozen=True)
class Viewer:
    """The signed-in user a request acts for."""

    user_id: int
    is_admin: bool


def visible_groups(viewer: Viewer) -> ColumnElement[bool]:
    """A WHERE clause over `Group` keeping the groups `viewer` may see."""
    if viewer.is_admin:
        return true()
    memberships = select(Membership.group_id).where(Membership.user_id == viewer.user_id)
    return or_(Group.is_private.is_(False), Group.id.in_(memberships))


def can_read_inbound(viewer: Viewer) -> bool:
    """The inbound log shows every sender and reason: administrators only."""
    return viewer.is_admin
