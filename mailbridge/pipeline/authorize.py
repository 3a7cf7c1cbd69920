"""Authorize: may this sender post through this route?

The author is the From header's address (RFC 5322 §3.6.2), matched against
users' addresses and aliases. The envelope sender is not used: forwarding,
lists and SRS rewrite it, while From names the person. The posting decision
uses the identity a DMARC check would (RFC 7489 §6.6.1): the From domain,
and no one at all when From names mailboxes in several domains.

Each recipient is judged by its own binding's policy, so the order of the
RCPTs never changes who may post: the group gets its post when any of its
recipients admits the sender, and the others are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection

from feed.admin import USER_BY_ADDRESS, is_member
from feed.policy import SenderPolicy
from mailbridge import replies
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.route import Route
from mailbridge.pipeline.types import Reject, Reply


@dataclass(frozen=True)
class Author:
    user_id: int | None
    email: str
    name: str


@dataclass(frozen=True)
class Authorization:
    """The post's author, and the recipients whose policy refused the sender."""

    author: Author
    refused: dict[str, Reject] = field(default_factory=dict)


def authorize_sender(conn: Connection, message: ParsedMessage, route: Route) -> Authorization:
    """Who posts, and which recipients refuse; `Reject` when all of them do."""
    sender = message.sender
    trusted = message.trusted_author()
    email = trusted.email if trusted else ""
    user = conn.execute(USER_BY_ADDRESS, {"address": email.lower()}).first() if email else None
    membership: list[bool] = []  # asked at most once, and only if a policy needs it

    def refusal_of(policy: SenderPolicy) -> str | None:
        if policy.needs_membership and user is not None and not membership:
            membership.append(is_member(conn, route.group_id, user.id))
        refusal = policy.refusal(email, is_member=bool(membership and membership[0]))
        if refusal is not None and trusted is None:
            refusal = "the From field names no author that can be trusted"
        return refusal

    refused: dict[str, Reject] = {}
    for recipient, policy in zip(route.recipients, route.policies, strict=True):
        refusal = refusal_of(policy)
        if refusal is not None:
            refused[recipient] = _reject(policy, refusal, message.from_warning)
    if len(refused) == len(route.recipients):
        raise refused[min(refused)]  # the same whatever the RCPT order
    shown = trusted or sender
    author_email = shown.email if shown else ""
    name = (user.name if user else "") or (shown.name if shown else "") or author_email
    return Authorization(Author(user.id if user else None, author_email, name), refused)


def _reject(policy: SenderPolicy, refusal: str, from_warning: str) -> Reject:
    reply = Reply(replies.SENDER_REFUSED.code, replies.SENDER_REFUSED.status, _smtp_text(refusal))
    reason = f"sender refused by {policy} policy: {refusal}"
    if from_warning:
        reason += f" (suspicious From: {from_warning})"
    return Reject(reason, reply)


def _smtp_text(text: str) -> str:
    # An SMTP reply line is ASCII (RFC 5321 §4.2): keep it printable.
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:400]
