"""After DATA, over real sockets: long lines, bare LFs, one LMTP reply per
recipient whatever happens, and our own failures as plain 451s."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import threading
from collections.abc import Sequence

import pytest
from sqlalchemy import select, text

from feed.blobs import BlobStore
from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Post
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import DeliveryReport, Pipeline
from mailbridge.pipeline.types import Source
from mailbridge.smtp import READ_LIMIT, DoorShared, InboundHandler
from mailbridge.spool import Delivery
from mailbridge.workers import Deliverer, thread_deliverer
from tests.conftest import Factory
from tests.mailbridge.conftest import Served, serving
from tests.mailbridge.test_smtp import count, make_mail, smtp, wait_for_log

RECIPIENTS = ("eng@company.example", "ops@company.example", "sales@company.example")


@pytest.fixture
def groups(eng: Factory) -> Factory:
    for slug in ("ops", "sales"):
        eng.group(slug)
        eng.member(slug, "alice@company.example")
        eng.binding(f"{slug}@company.example", slug)
    return eng


def stored_raw(db: Database, settings: Settings) -> bytes:
    with db.reader() as session:
        digest = session.scalars(select(InboundLog.sha256)).first()
    assert digest is not None
    return BlobStore(settings.blob_dir).get(digest)


def lmtp_replies(served: Served, data: bytes) -> list[tuple[int, bytes]]:
    """LMTP to the three RECIPIENTS: the reply for each after DATA (RFC 2033 §4.2)."""
    with smtplib.LMTP("127.0.0.1", served.lmtp_port, timeout=30) as client:
        client.ehlo()
        client.mail("alice@company.example")
        for rcpt in RECIPIENTS:
            assert client.rcpt(rcpt)[0] == 250
        first = client.data(data)
        replies = [first, *(client.getreply() for _ in RECIPIENTS[1:])]
        assert client.noop()[0] == 250  # still in step: the next reply is NOOP's
    return replies


def test_a_line_longer_than_1000_octets_is_accepted_and_kept_whole(
    eng: Factory, served: Served, db: Database, settings: Settings
) -> None:
    long_line = "<p>" + "word " * 2_000 + "</p>"  # 10,007 octets, Outlook HTML style
    mail = make_mail()
    mail.set_content(long_line + "\n", subtype="html", cte="8bit")
    with smtp(served) as client:
        assert client.send_message(mail) == {}
    assert count(db, Post) == 1
    assert long_line.encode() + b"\r\n" in stored_raw(db, settings)


def test_a_line_longer_than_the_read_limit_arrives_whole(
    eng: Factory, served: Served, db: Database, settings: Settings
) -> None:
    long_line = b"x" * (3 * READ_LIMIT + 17) + b"\r\n"
    data = bytes(make_mail()) + b"\r\n" + long_line  # after the body, as a part of it
    with smtp(served) as client:
        assert client.sendmail("alice@company.example", ["eng@company.example"], data) == {}
    assert long_line in stored_raw(db, settings)


def test_bare_line_feeds_are_stored_as_crlf(
    eng: Factory, served: Served, db: Database, settings: Settings
) -> None:
    data = (
        b"From: alice@company.example\nTo: eng@company.example\nSubject: bare\n"
        b"Message-ID: <bare@company.example>\n\nfirst line\n..dot-stuffed\r\nlast\n"
    )
    with smtp(served) as client:
        client.ehlo()
        client.mail("alice@company.example")
        client.rcpt("eng@company.example")
        assert client.docmd("DATA")[0] == 354
        client.send(data + b"\r\n.\r\n")
        code, _ = client.getreply()
    assert code == 250
    raw = stored_raw(db, settings)
    assert raw.count(b"\n") == raw.count(b"\r\n")
    # A bare LF is not a line end for the protocol: no dot is taken off after it.
    assert b"first line\r\n..dot-stuffed\r\nlast\r\n" in raw


def test_a_command_line_too_long_is_500_5_5_2(eng: Factory, served: Served) -> None:
    with smtp(served) as client:
        client.ehlo()
        for length in (2_000, 2 * READ_LIMIT):
            assert client.docmd("NOOP", "x" * length) == (500, b"5.5.2 Line too long")
        assert client.noop()[0] == 250


def test_lmtp_with_a_long_line_answers_each_of_three_recipients_and_delivers(
    groups: Factory, served: Served, db: Database
) -> None:
    mail = make_mail(to=", ".join(RECIPIENTS), body="a" * 2_000 + "\n")
    mail.replace_header("Content-Transfer-Encoding", "8bit")
    replies = lmtp_replies(served, mail.as_bytes())
    assert [code for code, _ in replies] == [250, 250, 250]
    assert count(db, Post) == 3  # one post in each group


def test_lmtp_oversize_answers_each_recipient_and_is_recorded(
    groups: Factory, served: Served, db: Database
) -> None:
    big = make_mail(to=", ".join(RECIPIENTS), body=("y" * 76 + "\n") * 20_000)  # > 1 MiB
    replies = lmtp_replies(served, big.as_bytes())
    assert [(code, text[:5]) for code, text in replies] == [(552, b"5.3.4")] * 3
    wait_for_log(db)
    assert count(db, Post) == 0


def test_lmtp_internal_failure_answers_each_recipient_with_a_plain_451(
    groups: Factory, served: Served, settings: Settings
) -> None:
    shutil.rmtree(settings.blob_dir, ignore_errors=True)
    settings.blob_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.blob_dir.write_text("not a folder")  # storage fails for real
    replies = lmtp_replies(served, make_mail(to=", ".join(RECIPIENTS)).as_bytes())
    assert [code for code, _ in replies] == [451] * 3
    assert all(text.startswith(b"4.3.0 ") and b"Error" not in text for _, text in replies)


def test_lmtp_without_a_delivery_in_time_answers_each_recipient_and_a_retry_delivers(
    groups: Factory, settings: Settings, pipeline: Pipeline, db: Database
) -> None:
    release = threading.Event()
    deliver_now = thread_deliverer(pipeline).run_batch

    async def deliver_late(raws: Sequence[Delivery]) -> list[DeliveryReport]:
        await asyncio.to_thread(release.wait, 30)
        return await deliver_now(raws)

    mail = make_mail(to=", ".join(RECIPIENTS)).as_bytes()
    late = Deliverer(deliver_late, lanes=1)
    with serving(settings, pipeline, late, delivery_deadline=0.5) as served:
        replies = lmtp_replies(served, mail)
        release.set()
        again = lmtp_replies(served, mail)
    assert [code for code, _ in replies] == [451] * 3
    assert all(text.startswith(b"4.3.0 ") for _, text in replies)
    assert [code for code, _ in again] == [250] * 3
    assert count(db, Post) == 3  # the late delivery and its retry: one post per group


def test_a_failing_rcpt_check_is_a_plain_451_4_3_0(
    eng: Factory, served: Served, db: Database
) -> None:
    with db.transaction() as session:  # the check's query fails for real
        session.execute(text("ALTER TABLE bindings RENAME TO bindings_gone"))
    try:
        with smtp(served) as client:
            client.ehlo()
            client.mail("alice@company.example")
            code, reply = client.rcpt("eng@company.example")
    finally:
        with db.transaction() as session:
            session.execute(text("ALTER TABLE bindings_gone RENAME TO bindings"))
    assert (code, reply) == (451, b"4.3.0 Temporary local problem, please try again later")


def test_an_exception_in_a_hook_is_answered_451_4_3_0_without_its_text(
    settings: Settings, pipeline: Pipeline
) -> None:
    shared = DoorShared.for_server(settings, pipeline)
    handler = InboundHandler(pipeline, Source.SMTP, thread_deliverer(pipeline), shared)
    error = RuntimeError("(OperationalError) database is locked\n[SQL: BEGIN IMMEDIATE]")
    answer = asyncio.run(handler.handle_exception(error))
    assert answer == "451 4.3.0 Temporary local problem, please try again later"
