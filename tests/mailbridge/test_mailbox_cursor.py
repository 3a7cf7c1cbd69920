"""IMAP sync cursors move in the delivery's own transaction, over settled messages only."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from feed.db import Database
from feed.inbound import InboundLog, InboundStatus
from feed.mailboxes import ImapSpec, SyncCursor, add_imap_binding, read_cursor, restart_cursor
from feed.posts import Post
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.route import imap_recipient
from mailbridge.pipeline.types import Envelope, MailboxOrigin, RawMessage, Source
from tests.conftest import Factory
from tests.poison import POISON_SUBJECT, posts_titled_poison_refused

VALIDITY = 1700000001
RECIPIENT = imap_recipient("support")


@pytest.fixture
def binding_id(make: Factory, db: Database, settings: Settings) -> int:
    make.group("support")
    spec = ImapSpec(
        "support", "support", "127.0.0.1", 143, "desk", "pw", tls="none", senders="anyone"
    )
    with db.transaction() as session:
        binding = add_imap_binding(session, settings.secret_key, spec)
        restart_cursor(session, binding.id, VALIDITY)
        return binding.id


def imap_raw(
    binding_id: int, uid: int, subject: str = "", validity: int = VALIDITY, message: int = 0
) -> RawMessage:
    """The message `message` (default: the UID's own) at UID `uid`."""
    message = message or uid
    data = (
        f"From: Carol <carol@customer.example>\r\nTo: support@company.example\r\n"
        f"Subject: {subject or f'Ticket {message}'}\r\n"
        f"Message-ID: <ticket-{message}@customer.example>\r\n"
        f"\r\nPlease help with case {message}.\r\n"
    ).encode()
    envelope = Envelope("carol@customer.example", (RECIPIENT,), "imap://desk@127.0.0.1:143/INBOX")
    return RawMessage(data, envelope, Source.IMAP, MailboxOrigin(binding_id, validity, uid))


def cursor(db: Database, binding_id: int) -> SyncCursor:
    with db.reader() as session:
        found = read_cursor(session, binding_id)
    assert found is not None
    return found


def post_count(db: Database) -> int:
    with db.reader() as session:
        return session.scalar(select(func.count()).select_from(Post)) or 0


def test_a_batch_posts_to_the_bound_group_and_moves_the_cursor(
    pipeline: Pipeline, db: Database, binding_id: int
) -> None:
    reports = pipeline.deliver_batch([imap_raw(binding_id, uid) for uid in (3, 4, 9)])
    assert [r.outcomes[RECIPIENT].accepted for r in reports] == [True, True, True]
    assert cursor(db, binding_id) == SyncCursor(VALIDITY, 9, None, 0)
    assert post_count(db) == 3
    with db.reader() as session:
        log = session.execute(
            select(InboundLog.source, InboundLog.rcpt_to, InboundLog.status).order_by(InboundLog.id)
        ).all()
    assert [tuple(row) for row in log] == [("imap", RECIPIENT, str(InboundStatus.ACCEPTED))] * 3


def test_a_failed_message_stops_the_cursor_and_its_attempts_are_counted(
    pipeline: Pipeline, db: Database, binding_id: int
) -> None:
    batch = [
        imap_raw(binding_id, 1),
        imap_raw(binding_id, 2, POISON_SUBJECT),
        imap_raw(binding_id, 3),
    ]
    with posts_titled_poison_refused(db):
        first = pipeline.deliver_batch(batch)
        assert [r.outcomes[RECIPIENT].deferred for r in first] == [False, True, False]
        assert cursor(db, binding_id) == SyncCursor(VALIDITY, 1, 2, 1)
        pipeline.deliver_batch(batch[1:])  # the next pass tries again from UID 2
        assert cursor(db, binding_id) == SyncCursor(VALIDITY, 1, 2, 2)
    # UID 3 was posted in the first pass and is recognised, not posted twice.
    assert post_count(db) == 2
    pipeline.give_up(batch[1], "given up in the test")
    assert cursor(db, binding_id) == SyncCursor(VALIDITY, 2, None, 0)
    with db.reader() as session:
        reason, digest = session.execute(
            select(InboundLog.reason, InboundLog.sha256).where(
                InboundLog.status == str(InboundStatus.REJECTED)
            )
        ).one()
    assert reason == "given up in the test"
    assert digest is not None
    assert pipeline.blobs.get(digest) == batch[1].data


def test_the_cursor_never_moves_back_nor_across_a_new_uidvalidity(
    pipeline: Pipeline, db: Database, binding_id: int
) -> None:
    pipeline.deliver_batch([imap_raw(binding_id, 10)])
    pipeline.deliver_batch([imap_raw(binding_id, 5)])  # a late, older batch
    assert cursor(db, binding_id).last_uid == 10
    pipeline.deliver_batch([imap_raw(binding_id, 11, validity=VALIDITY + 1)])
    assert cursor(db, binding_id).last_uid == 10
    with db.transaction() as session:
        restart_cursor(session, binding_id, VALIDITY + 1)
    # After a UIDVALIDITY change everything comes again; Message-IDs keep one post each.
    reports = pipeline.deliver_batch(
        [
            imap_raw(binding_id, uid, validity=VALIDITY + 1, message=old)
            for uid, old in ((1, 10), (2, 5))
        ]
    )
    assert cursor(db, binding_id) == SyncCursor(VALIDITY + 1, 2, None, 0)
    assert [r.outcomes[RECIPIENT].status for r in reports] == [InboundStatus.IGNORED] * 2


def test_one_message_in_a_bound_mailbox_and_at_a_bound_address_is_one_post(
    pipeline: Pipeline, db: Database, binding_id: int, make: Factory
) -> None:
    make.binding("support@company.example", "support", senders="anyone")
    imap = imap_raw(binding_id, 1)
    smtp = RawMessage(
        imap.data, Envelope("carol@customer.example", ("support@company.example",)), Source.SMTP
    )
    assert pipeline.deliver(smtp).outcomes["support@company.example"].accepted
    assert pipeline.deliver(imap).outcomes[RECIPIENT].status is InboundStatus.IGNORED
    assert post_count(db) == 1
    assert cursor(db, binding_id).last_uid == 1


def test_a_later_chunk_never_moves_the_cursor_over_a_failing_message(
    pipeline: Pipeline, db: Database, binding_id: int
) -> None:
    def uids(*numbers: int) -> list[RawMessage]:
        return [imap_raw(binding_id, n, POISON_SUBJECT if n in (2, 4) else "") for n in numbers]

    with posts_titled_poison_refused(db):
        pipeline.deliver_batch(uids(1, 2))  # the first chunk of a pass
        assert cursor(db, binding_id) == SyncCursor(VALIDITY, 1, 2, 1)
        pipeline.deliver_batch(uids(3, 4))  # the next chunk: 3 posted, 4 failing too
        assert cursor(db, binding_id) == SyncCursor(VALIDITY, 1, 2, 1)
        pipeline.deliver_batch(uids(2, 3, 4))  # the next pass starts again at 2
        assert cursor(db, binding_id) == SyncCursor(VALIDITY, 1, 2, 2)
        pipeline.give_up(uids(2)[0], "given up")
        assert cursor(db, binding_id) == SyncCursor(VALIDITY, 2, None, 0)
        pipeline.deliver_batch(uids(3, 4))
        assert cursor(db, binding_id) == SyncCursor(VALIDITY, 3, 4, 1)
    assert post_count(db) == 2  # 1 and 3, each once


def test_a_late_failed_attempt_below_the_cursor_is_void(
    pipeline: Pipeline, db: Database, binding_id: int
) -> None:
    # Two batches of one binding in flight at once (a runner cancelled by a
    # binding edit while its batch still runs, and its successor): the later
    # one commits UIDs 1-3, then the earlier one's failure of UID 2 commits.
    pipeline.deliver_batch([imap_raw(binding_id, uid) for uid in (1, 2, 3)])
    with posts_titled_poison_refused(db):
        pipeline.deliver_batch([imap_raw(binding_id, 2, POISON_SUBJECT, message=20)])
    pipeline.deliver_batch([imap_raw(binding_id, 4)])
    assert cursor(db, binding_id) == SyncCursor(VALIDITY, 4, None, 0)


def test_a_nul_in_the_envelope_sender_fails_no_batch(
    pipeline: Pipeline, db: Database, binding_id: int
) -> None:
    # The IMAP door takes mail_from from the message's own Return-Path; a
    # NUL there cannot be stored in PostgreSQL text.
    bad = imap_raw(binding_id, 1)
    bad = RawMessage(
        bad.data,
        Envelope("carol\x00@customer.example", bad.envelope.rcpt_tos, bad.envelope.remote),
        bad.source,
        bad.origin,
    )
    reports = pipeline.deliver_batch([bad, imap_raw(binding_id, 2)])
    # Message 2 must not share message 1's fate, and 1's attempt must count.
    assert reports[1].outcomes[RECIPIENT].accepted
    assert reports[0].outcomes[RECIPIENT].accepted  # the NUL is dropped from the log row
    assert cursor(db, binding_id) == SyncCursor(VALIDITY, 2, None, 0)
