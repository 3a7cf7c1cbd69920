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
    judge = _Judge(conn, route.group_id, message)
    refused: dict[str, Reject] = {}
    for recipient, policy in zip(route.recipients, route.policies, strict=True):
        refusal = judge.refusal(policy)
        if refusal is not None:
            refused[recipient] = _reject(policy, refusal, message.from_warning)
    if len(refused) == len(route.recipients):
        raise refused[min(refused)]  # the same whatever the RCPT order
    return Authorization(judge.author(), refused)


class _Judge:
    """The sender's standing in one group, each answer asked of the database once.

    Every trusted From address must be admitted: in a From list one member
    may not vouch for the others (and with no trusted address, no one is).
    """

    def __init__(self, conn: Connection, group_id: int, message: ParsedMessage) -> None:
        self.conn, self.group_id, self.message = conn, group_id, message
        self.authors = message.trusted_authors()
        self.untrusted = not self.authors and bool(message.from_warning)
        self.users = {
            a.email: conn.execute(USER_BY_ADDRESS, {"address": a.email.lower()}).first()
            for a in self.authors
        }
        self.members: dict[int, bool] = {}

    def refusal(self, policy: SenderPolicy) -> str | None:
        if not self.authors:
            refusal = policy.refusal("", is_member=False)
            if refusal is not None and self.untrusted:
                return "the From field names no author that can be trusted"
            return refusal
        for author in self.authors:
            user = self.users[author.email]
            member = policy.needs_membership and user is not None and self._is_member(user.id)
            refusal = policy.refusal(author.email, is_member=member)
            if refusal is not None:
                return refusal
        return None

    def author(self) -> Author:
        """The first trusted From address (linked to its user), else the
        first address as written, linked to no one."""
        shown = self.authors[0] if self.authors else self.message.sender
        user = self.users.get(shown.email) if shown and self.authors else None
        email = shown.email if shown else ""
        name = (user.name if user else "") or (shown.name if shown else "") or email
        return Author(user.id if user else None, email, name)

    def _is_member(self, user_id: int) -> bool:
        if user_id not in self.members:
            self.members[user_id] = is_member(self.conn, self.group_id, user_id)
        return self.members[user_id]


def _reject(policy: SenderPolicy, refusal: str, from_warning: str) -> Reject:
    reply = Reply(replies.SENDER_REFUSED.code, replies.SENDER_REFUSED.status, _smtp_text(refusal))
    reason = f"sender refused by {policy} policy: {refusal}"
    if from_warning:
        reason += f" (suspicious From: {from_warning})"
    return Reject(reason, reply)


def _smtp_text(text: str) -> str:
    # An SMTP reply line is ASCII (RFC 5321 §4.2): keep it printable.
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:400]
