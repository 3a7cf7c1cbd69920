"""Authorize: may this sender post through this route?

The author is the From header's address (RFC 5322 §3.6.2), matched against
users' addresses and aliases. The envelope sender is not used: forwarding,
lists and SRS rewrite it, while From names the person.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from feed.admin import USER_BY_ADDRESS, is_member
from mailbridge import replies
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.route import Route
from mailbridge.pipeline.types import Reject, Reply


@dataclass(frozen=True)
class Author:
    user_id: int | None
    email: str
    name: str


def authorize_sender(conn: Connection, message: ParsedMessage, route: Route) -> Author:
    """The author of the post, or `Reject` with the policy's reason."""
    sender = message.sender
    email = sender.email if sender else ""
    user = conn.execute(USER_BY_ADDRESS, {"address": email.lower()}).first() if email else None
    member = (
        user is not None
        and route.policy.needs_membership
        and is_member(conn, route.group_id, user.id)
    )
    refusal = route.policy.refusal(email, is_member=member)
    if refusal is not None:
        reply = Reply(
            replies.SENDER_REFUSED.code, replies.SENDER_REFUSED.status, _smtp_text(refusal)
        )
        raise Reject(f"sender refused by {route.policy} policy: {refusal}", reply)
    name = (user.name if user else "") or (sender.name if sender else "") or email
    return Author(user.id if user else None, email, name)


def _smtp_text(text: str) -> str:
    # An SMTP reply line is ASCII (RFC 5321 §4.2): keep it printable.
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:400]
