"""The orchestrator: inbound messages through every stage, for every group.

parse → classify → extract (pure, outside the database lock), then route →
authorize → thread → persist in one write transaction for a batch of
messages (written again with a savepoint per message and group if any of
them fails). A message no route would take from its sender is not extracted
(see precheck.py); mail to postmaster@ is kept for the admins. Stage stops
become recorded outcomes; an unexpected error becomes a temporary failure
(the sender retries), never a lost message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from feed.base import utcnow
from feed.blobrefs import discard_unreferenced, pin_stored
from feed.blobs import BlobStore, PendingBlob
from feed.db import Database
from feed.inbound import InboundStatus
from mailbridge import replies
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.authorize import Author, authorize_sender
from mailbridge.pipeline.classify import Classification, MailKind, classify_message
from mailbridge.pipeline.extract import Content, extract_content
from mailbridge.pipeline.journal import Journal
from mailbridge.pipeline.mailbox import advance_cursors, count_attempts, settle
from mailbridge.pipeline.parse import parse_message
from mailbridge.pipeline.persist import NewPost, persist_post
from mailbridge.pipeline.precheck import PRECHECK_MIN_BYTES, sender_may_post
from mailbridge.pipeline.refused_raw import keep_refused, unnamed_blobs
from mailbridge.pipeline.route import (
    RecipientCheck,
    Route,
    check_recipient,
    normalize_recipient,
    postmaster_recipients,
    route_messages,
)
from mailbridge.pipeline.thread import (
    derive_message_id,
    lock_groups_for_threading,
    resolve_thread,
    storable_id,
)
from mailbridge.pipeline.types import (
    Ignore,
    Outcome,
    RawMessage,
    Reject,
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

TEMPORARY = Outcome(None, "temporary failure", replies.TEMPORARY_FAILURE)
FOR_POSTMASTER = "for the postmaster: kept for the administrators"


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
class Prepared:
    """What the pure stages made of a message, before the database is touched."""

    raw: RawMessage
    blob: PendingBlob  # the raw message
    message: ParsedMessage
    message_id: str
    classification: Classification
    # Extracted only for a person's mail that some route may take from its sender.
    content: Content | None
    attachment_blobs: tuple[PendingBlob, ...]

    @property
    def sha256(self) -> str:
        return self.blob.digest

    def wait_stored(self) -> None:
        """Block until its blobs are durable, before rows that name them are written.

        The writes started before parsing; by the time a message's rows are
        written (after the whole batch was prepared) they have mostly ended,
        so the database lock is seldom held waiting on a disk.
        """
        for blob in (self.blob, *self.attachment_blobs):
            blob.wait()


@dataclass(frozen=True)
class Pipeline:
    db: Database
    blobs: BlobStore
    local_domains: Collection[str]
    loop_marker: str | None = None
    # What a refused message keeps of its raw bytes (see pipeline.refused_raw).
    refused_raw_bytes: int = 64 * 1024

    def check_recipient(self, address: str, wait: float | None = None) -> RecipientCheck:
        """The RCPT answer for `address`, waiting at most `wait` s for a lock."""
        with self.db.reader(wait) as session:
            return check_recipient(session.connection(), address, self.local_domains)

    def record_refusal(
        self, raw: RawMessage, reason: str, size: int = 0, wait: float | None = None
    ) -> None:
        """Log a message refused before its content was accepted (RCPT, size)."""
        journal = Journal()
        journal.received(raw, None, None, InboundStatus.REJECTED, reason, size=size)
        with self.db.transaction(wait) as session:
            journal.write(session.connection())

    def give_up(self, raw: RawMessage, reason: str) -> None:
        """Record a mailbox message that failed too often: refused, raw bytes
        kept, and its mailbox's cursor moved past it, in one transaction."""
        digest = self.blobs.put(raw.data)
        journal = Journal()
        journal.received(raw, None, digest, InboundStatus.REJECTED, reason)
        with self.db.transaction() as session:
            conn = session.connection()
            pin_stored(conn, self.blobs, [(digest, raw.data)])
            journal.write(conn)
            if raw.origin is not None:
                settle(conn, raw.origin)

    def deliver(self, raw: RawMessage) -> DeliveryReport:
        return self.deliver_batch([raw])[0]

    def deliver_batch(self, raws: Sequence[RawMessage]) -> list[DeliveryReport]:
        """Deliver messages together: one report each, all after one commit.

        Parsing, classification, extraction and the blob writes run first,
        outside the database lock. Then one write transaction and a single
        commit (a single WAL fsync on SQLite) for the whole batch; a failure
        undoes only the failing message's rows (see below). Nothing is
        reported before that commit, so no 250 ever precedes durability
        (group commit).
        """
        # The raw blobs are written (and fsynced) while the messages are parsed.
        stored = [self.blobs.put_soon(raw.data) for raw in raws]
        prepared = [self._prepare(raw, blob) for raw, blob in zip(raws, stored, strict=True)]
        # First without savepoints (two statements a message fewer); if
        # anything fails the batch is rolled back and written again with a
        # savepoint per message, so that only the failing one is deferred.
        try:
            with self.db.transaction() as session:
                reports = self._write(session.connection(), raws, prepared, self._deliver_to_group)
        except Exception as exc:
            log.warning("a delivery batch failed (%r); writing it again message by message", exc)
            try:
                with self.db.transaction() as session:
                    reports = self._write(session.connection(), raws, prepared, self._isolated)
            except Exception:
                log.exception("the delivery transaction of %d message(s) failed", len(raws))
                self._count_failed_attempts(raws)
                return [_deferred(raw) for raw in raws]
        self._discard_unnamed(prepared, reports)
        return reports

    def _discard_unnamed(
        self, prepared: Sequence[Prepared | None], reports: Sequence[DeliveryReport]
    ) -> None:
        """Delete what the batch wrote that its rows do not name (see
        `unnamed_blobs`); a failure only leaves it to the daily sweep."""
        unnamed: set[str] = set()
        for item, report in zip(prepared, reports, strict=True):
            if item is not None:
                statuses = {outcome.status for outcome in report.outcomes.values()}
                digests = (blob.digest for blob in item.attachment_blobs)
                unnamed |= unnamed_blobs(item.sha256, digests, statuses)
        try:
            discard_unreferenced(self.db, self.blobs, unnamed)
        except Exception:
            log.exception("cannot delete the unnamed blobs of refused mail")

    def _count_failed_attempts(self, raws: Sequence[RawMessage]) -> None:
        """Mailbox messages whose whole transaction failed: an attempt each
        (in a transaction of their own), so that one that always fails is
        given up in the end instead of retried forever."""
        if not any(raw.origin for raw in raws):
            return
        try:
            with self.db.transaction() as session:
                count_attempts(session.connection(), raws)
        except Exception:
            log.exception("cannot count the failed attempts of %d message(s)", len(raws))

    def _prepare(self, raw: RawMessage, stored: PendingBlob) -> Prepared | None:
        try:
            message = parse_message(raw.data)
            message_id = storable_id(message.message_id or derive_message_id(message))
            kind = classify_message(
                message, own_domains=self.local_domains, loop_header_value=self.loop_marker
            )
            if kind.kind is not MailKind.PERSON or (
                len(raw.data) >= PRECHECK_MIN_BYTES
                and not sender_may_post(self.db, raw.envelope.rcpt_tos, message)
            ):
                return Prepared(raw, stored, message, message_id, kind, None, ())
            content = extract_content(message)
            parts = tuple(self.blobs.put_soon(part.data) for part in content.attachments)
        except Exception:
            log.exception("preparing a message from %s failed", raw.envelope.mail_from)
            return None
        return Prepared(raw, stored, message, message_id, kind, content, parts)

    def _write(
        self,
        conn: Connection,
        raws: Sequence[RawMessage],
        prepared: Sequence[Prepared | None],
        deliver_one: Callable[[Connection, Prepared, Route, Journal], dict[str, Outcome]],
    ) -> list[DeliveryReport]:
        envelopes = [item.raw.envelope.rcpt_tos if item else () for item in prepared]
        routes = route_messages(conn, envelopes)
        lock_groups_for_threading(conn, (r.group_id for rs in routes if rs for r in rs))
        reports = []
        journal = Journal()
        for raw, item, item_routes in zip(raws, prepared, routes, strict=True):
            if item is None or item_routes is None:
                reports.append(_deferred(raw))
                continue
            postmaster = postmaster_recipients(conn, raw.envelope.rcpt_tos, self.local_domains)
            if not item_routes and not postmaster:
                reports.append(self._refuse_unrouted(conn, item, journal))
                continue
            outcomes = (
                self._keep_for_postmaster(conn, item, postmaster, journal) if postmaster else {}
            )
            for route in item_routes:
                outcomes.update(deliver_one(conn, item, route, journal))
            reports.append(DeliveryReport(outcomes))
        advance_cursors(conn, raws, reports)
        journal.write(conn)
        return reports

    def _isolated(
        self, conn: Connection, item: Prepared, route: Route, journal: Journal
    ) -> dict[str, Outcome]:
        """`_deliver_to_group` in a savepoint: a failure is this message's alone."""
        try:
            try:
                return self._in_savepoint(conn, item, route, journal)
            except IntegrityError:
                # A concurrent delivery of the same Message-ID won the race;
                # the second attempt finds it and records a duplicate.
                return self._in_savepoint(conn, item, route, journal)
        except Exception:
            log.exception("delivery of %s to group %s failed", item.message_id, route.group_slug)
            return dict.fromkeys(route.recipients, TEMPORARY)

    def _in_savepoint(
        self, conn: Connection, item: Prepared, route: Route, journal: Journal
    ) -> dict[str, Outcome]:
        own = Journal()  # kept only if the savepoint is
        with conn.begin_nested():
            outcome = self._deliver_to_group(conn, item, route, own)
        journal.add(own)
        return outcome

    def _deliver_to_group(
        self, conn: Connection, item: Prepared, route: Route, journal: Journal
    ) -> dict[str, Outcome]:
        """One post at most; an outcome for each of the route's recipients."""
        item.wait_stored()
        if item.classification.kind is not MailKind.PERSON:
            return self._stopped(conn, item, Ignore(item.classification.reason), route, journal)
        try:
            authorization = authorize_sender(conn, item.message, route)
        except Reject as stop:
            return self._stopped(conn, item, stop, route, journal)
        outcomes: dict[str, Outcome] = {}
        for recipient, refusal in authorization.refused.items():
            outcomes.update(self._stopped(conn, item, refusal, route.only({recipient}), journal))
        admitted = route.only(set(route.recipients) - set(authorization.refused))
        if item.content is None:
            # The pre-check found no route taking the sender; one does now
            # (a membership changed meanwhile): the client retries.
            log.warning("sender of %s admitted since the pre-check", item.message_id)
            return outcomes | dict.fromkeys(admitted.recipients, TEMPORARY)
        try:
            post_id = self._post(conn, item, item.content, admitted, authorization.author, journal)
        except StageStop as stop:
            return outcomes | self._stopped(conn, item, stop, admitted, journal)
        reason = f"posted to group {route.group_slug}"
        if item.message.from_warning:
            reason += f" (suspicious From: {item.message.from_warning})"
        journal.received(
            item.raw, item.message, item.sha256, InboundStatus.ACCEPTED, reason, admitted, post_id
        )
        accepted = Outcome(InboundStatus.ACCEPTED, reason, replies.OK_QUEUED, post_id)
        return outcomes | dict.fromkeys(admitted.recipients, accepted)

    def _post(
        self,
        conn: Connection,
        item: Prepared,
        content: Content,
        route: Route,
        author: Author,
        journal: Journal,
    ) -> int:
        now = utcnow()
        placement = resolve_thread(conn, item.message, item.message_id, route.group_id, now)
        new = NewPost(
            route.group_id,
            item.message_id,
            item.message,
            author,
            placement,
            content,
            tuple(blob.digest for blob in item.attachment_blobs),
            now,
        )
        return persist_post(conn, new, journal)

    def _refuse_unrouted(
        self, conn: Connection, item: Prepared, journal: Journal
    ) -> DeliveryReport:
        reason = "no envelope recipient is bound to a group"
        item.wait_stored()
        digest, note = self._raw_to_keep(conn, item, InboundStatus.REJECTED)
        journal.received(item.raw, item.message, digest, InboundStatus.REJECTED, reason + note)
        outcome = Outcome(InboundStatus.REJECTED, reason, replies.UNKNOWN_RECIPIENT)
        return DeliveryReport(dict.fromkeys(item.raw.envelope.rcpt_tos, outcome))

    def _stopped(
        self, conn: Connection, item: Prepared, stop: StageStop, route: Route, journal: Journal
    ) -> dict[str, Outcome]:
        """Record a stage's stop in the inbound log and say what to answer
        to each of the route's recipients."""
        digest, note = self._raw_to_keep(conn, item, stop.status)
        journal.received(item.raw, item.message, digest, stop.status, stop.reason + note, route)
        outcome = Outcome(stop.status, stop.reason, stop.reply or DEFAULT_REPLIES[stop.status])
        return dict.fromkeys(route.recipients, outcome)

    def _keep_for_postmaster(
        self, conn: Connection, item: Prepared, recipients: tuple[str, ...], journal: Journal
    ) -> dict[str, Outcome]:
        """Mail for postmaster@: logged with its raw bytes for the admins to read."""
        item.wait_stored()
        digest, _ = self._raw_to_keep(conn, item, InboundStatus.POSTMASTER)
        journal.received(
            item.raw,
            item.message,
            digest,
            InboundStatus.POSTMASTER,
            FOR_POSTMASTER,
            recipients=recipients,
        )
        outcome = Outcome(InboundStatus.POSTMASTER, FOR_POSTMASTER, replies.OK_QUEUED)
        return dict.fromkeys(recipients, outcome)

    def _raw_to_keep(
        self, conn: Connection, item: Prepared, status: InboundStatus
    ) -> tuple[str, str]:
        """The blob an inbound row names, pinned, and a note for its reason:
        a refusal keeps an excerpt, anything else the whole message."""
        if status is InboundStatus.REJECTED:
            return keep_refused(conn, self.blobs, item.raw.data, self.refused_raw_bytes)
        pin_stored(conn, self.blobs, [(item.sha256, item.raw.data)])
        return item.sha256, ""


def _deferred(raw: RawMessage) -> DeliveryReport:
    """Every recipient a temporary failure: nothing was committed, the client retries."""
    recipients = (normalize_recipient(r) for r in raw.envelope.rcpt_tos)
    return DeliveryReport(dict.fromkeys(recipients, TEMPORARY))
