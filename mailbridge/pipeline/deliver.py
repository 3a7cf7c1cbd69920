"""The orchestrator: one inbound message through every stage, for every group.

parse → route → classify → authorize → thread → extract → persist, one
transaction per group. Stage stops become recorded outcomes; an unexpected
error becomes a temporary failure (the sender retries), never a lost message.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feed.base import utcnow
from feed.blobs import BlobStore
from feed.db import Database
from feed.inbound import InboundLog, InboundStatus
from mailbridge import replies
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.authorize import authorize_sender
from mailbridge.pipeline.classify import MailKind, classify_message
from mailbridge.pipeline.extract import Content, extract_content
from mailbridge.pipeline.parse import parse_message
from mailbridge.pipeline.persist import NewPost, persist_post
from mailbridge.pipeline.route import RecipientCheck, Route, check_recipient, route_message
from mailbridge.pipeline.thread import (
    derive_message_id,
    find_duplicate,
    lock_group_for_threading,
    resolve_thread,
    storable_id,
)
from mailbridge.pipeline.types import (
    Ignore,
    Outcome,
    RawMessage,
    Reply,
    StageStop,
)

log = logging.getLogger(__name__)

DEFAULT_REPLIES = {
    InboundStatus.ACCEPTED: replies.OK_QUEUED,
    InboundStatus.IGNORED: replies.OK_IGNORED,
    InboundStatus.HELD: replies.OK_QUEUED,
    InboundStatus.REJECTED: replies.UNKNOWN_RECIPIENT,
}


@dataclass(frozen=True)
class DeliveryReport:
    """Outcome per envelope recipient (normalised address)."""

    outcomes: dict[str, Outcome]

    def combined_reply(self) -> Reply:
        """The one answer SMTP can give after DATA (RFC 5321 §4.2.5).

        A temporary failure anywhere wins (a retry is safe: delivery is
        idempotent by Message-ID); otherwise any accepted recipient makes it
        250, and only when all were refused is the refusal returned.
        """
        values = list(self.outcomes.values())
        if any(o.deferred for o in values):
            return replies.TEMPORARY_FAILURE
        if all(o.status is InboundStatus.REJECTED for o in values) and values:
            return values[0].reply
        accepted = [o for o in values if o.status is not InboundStatus.REJECTED]
        return accepted[0].reply if accepted else replies.OK_QUEUED


@dataclass(frozen=True)
class Pipeline:
    db: Database
    blobs: BlobStore
    local_domains: Collection[str]
    loop_marker: str | None = None

    def check_recipient(self, address: str) -> RecipientCheck:
        with self.db.reader() as session:
            return check_recipient(session, address, self.local_domains)

    def record_refusal(self, raw: RawMessage, reason: str, size: int = 0) -> None:
        """Log a message refused before its content was accepted (RCPT, size)."""
        with self.db.transaction() as session:
            _log_inbound(session, raw, None, None, InboundStatus.REJECTED, reason, size=size)

    def deliver(self, raw: RawMessage) -> DeliveryReport:
        sha256 = self.blobs.put(raw.data)
        message = parse_message(raw.data)
        message_id = storable_id(message.message_id or derive_message_id(message))
        with self.db.reader() as session:
            routes = route_message(session, raw.envelope.rcpt_tos)
        if not routes:
            return self._refuse_unrouted(raw, message, sha256)
        outcomes: dict[str, Outcome] = {}
        for route in routes:
            outcome = self._deliver_with_retry(raw, message, message_id, sha256, route)
            outcomes.update(dict.fromkeys(route.recipients, outcome))
        return DeliveryReport(outcomes)

    def _refuse_unrouted(
        self, raw: RawMessage, message: ParsedMessage, sha256: str
    ) -> DeliveryReport:
        reason = "no envelope recipient is bound to a group"
        with self.db.transaction() as session:
            _log_inbound(session, raw, message, sha256, InboundStatus.REJECTED, reason)
        outcome = Outcome(InboundStatus.REJECTED, reason, replies.UNKNOWN_RECIPIENT)
        return DeliveryReport(dict.fromkeys(raw.envelope.rcpt_tos, outcome))

    def _deliver_with_retry(
        self, raw: RawMessage, message: ParsedMessage, message_id: str, sha256: str, route: Route
    ) -> Outcome:
        try:
            try:
                return self._deliver_to_group(raw, message, message_id, sha256, route)
            except IntegrityError:
                # A concurrent delivery of the same Message-ID won the race;
                # the second attempt finds it and records a duplicate.
                return self._deliver_to_group(raw, message, message_id, sha256, route)
        except Exception:
            log.exception("delivery of %s to group %s failed", message_id, route.group_slug)
            return Outcome(None, "temporary failure", replies.TEMPORARY_FAILURE)

    def _deliver_to_group(
        self, raw: RawMessage, message: ParsedMessage, message_id: str, sha256: str, route: Route
    ) -> Outcome:
        classification = classify_message(
            message, own_domains=self.local_domains, loop_header_value=self.loop_marker
        )
        if classification.kind is not MailKind.PERSON:
            with self.db.transaction() as session:
                return _stopped(session, raw, message, sha256, Ignore(classification.reason), route)
        # Extract is pure and can be slow (HTML conversion): done before the
        # write transaction so the database lock is held only to persist.
        content = extract_content(message)
        digests = tuple(self.blobs.put(part.data) for part in content.attachments)
        now = utcnow()
        with self.db.transaction() as session:
            try:
                post_id = self._post(session, message, message_id, route, content, digests, now)
            except StageStop as stop:
                return _stopped(session, raw, message, sha256, stop, route)
            reason = f"posted to group {route.group_slug}"
            _log_inbound(
                session, raw, message, sha256, InboundStatus.ACCEPTED, reason, route, post_id
            )
        return Outcome(InboundStatus.ACCEPTED, reason, replies.OK_QUEUED, post_id)

    def _post(
        self,
        session: Session,
        message: ParsedMessage,
        message_id: str,
        route: Route,
        content: Content,
        digests: tuple[str, ...],
        now: datetime,
    ) -> int:
        author = authorize_sender(session, message, route)
        lock_group_for_threading(session, route.group_id)
        duplicate = find_duplicate(session, route.group_id, message_id)
        if duplicate is not None:
            raise Ignore(f"duplicate of post {duplicate} (same Message-ID)")
        placement = resolve_thread(session, message, message_id, route.group_id, now)
        post = persist_post(
            session,
            NewPost(route.group_id, message_id, message, author, placement, content, digests, now),
        )
        return post.id


def _stopped(
    session: Session,
    raw: RawMessage,
    message: ParsedMessage,
    sha256: str,
    stop: StageStop,
    route: Route,
) -> Outcome:
    """Record a stage's stop in the inbound log and say what to answer."""
    _log_inbound(session, raw, message, sha256, stop.status, stop.reason, route)
    return Outcome(stop.status, stop.reason, stop.reply or DEFAULT_REPLIES[stop.status])


def _log_inbound(
    session: Session,
    raw: RawMessage,
    message: ParsedMessage | None,
    sha256: str | None,
    status: InboundStatus,
    reason: str,
    route: Route | None = None,
    post_id: int | None = None,
    size: int = 0,
) -> None:
    row = InboundLog(
        source=str(raw.source),
        remote=raw.envelope.remote[:255],
        mail_from=raw.envelope.mail_from[:998],
        rcpt_to=",".join(route.recipients if route else raw.envelope.rcpt_tos),
        message_id=storable_id(message.message_id) if message and message.message_id else None,
        subject=(message.subject[:998] if message else ""),
        sha256=sha256,
        size=len(raw.data) or size,
        status=str(status),
        reason=reason,
        group_id=route.group_id if route else None,
        post_id=post_id,
    )
    session.add(row)
