"""End to end over real sockets: smtplib against the SMTP and LMTP listeners."""

from __future__ import annotations

import shutil
import smtplib
import time
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select

from feed import admin
from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Post
from feed.threads import Thread
from mailbridge.config import Settings
from mailbridge.recipients import AcceptedRecipients
from tests.conftest import Factory
from tests.mailbridge.conftest import Served


def make_mail(
    sender: str = "alice@company.example",
    to: str = "eng@company.example",
    subject: str = "Release plan",
    body: str = "Shall we ship on Friday?\n",
    message_id: str | None = "<plan-1@company.example>",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Alice Martin <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def count(db: Database, model: type[Post] | type[Thread] | type[InboundLog]) -> int:
    with db.reader() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def wait_for_log(db: Database, rows: int = 1, timeout: float = 10) -> None:
    """Refusals are recorded in the background, after the answer."""
    deadline = time.monotonic() + timeout
    while count(db, InboundLog) < rows:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {rows} inbound log row(s) after {timeout} s")
        time.sleep(0.05)


def smtp(served: Served) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=10)


def test_it_posts_a_message_sent_to_a_bound_address(
    eng: Factory, served: Served, db: Database
) -> None:
    with smtp(served) as client:
        refused = client.send_message(make_mail())
    assert refused == {}
    with db.reader() as session:
        post = session.scalars(select(Post)).one()
        assert post.message_id == "plan-1@company.example"
        assert post.author_email == "alice@company.example"
        assert post.body_text == "Shall we ship on Friday?"
        thread = session.get_one(Thread, post.thread_id)
        assert thread.subject == "Release plan"
        assert thread.post_count == 1


def test_it_threads_a_reply_into_the_same_thread(
    eng: Factory, served: Served, db: Database
) -> None:
    reply = make_mail(
        sender="bob@company.example",
        subject="Re: Release plan",
        body=(
            "Friday works.\n\nOn Mon, Nov 23, 2026 at 9:14 AM Alice Martin "
            "<alice@company.example> wrote:\n> Shall we ship on Friday?\n"
        ),
        message_id="<plan-2@company.example>",
        In_Reply_To="<plan-1@company.example>",
        References="<plan-1@company.example>",
    )
    with smtp(served) as client:
        client.send_message(make_mail())
        client.send_message(reply)
    assert count(db, Thread) == 1
    with db.reader() as session:
        first, second = session.scalars(select(Post).order_by(Post.id)).all()
        assert second.parent_id == first.id
        assert second.body_text == "Friday works."
        assert "Shall we ship on Friday?" in second.elided_text


def test_it_rejects_unknown_local_recipient_at_rcpt(
    eng: Factory, served: Served, db: Database
) -> None:
    with smtp(served) as client:
        client.ehlo()
        client.mail("alice@company.example")
        code, text = client.rcpt("nobody@company.example")
    assert (code, text[:5]) == (550, b"5.1.1")
    wait_for_log(db)
    with db.reader() as session:
        row = session.scalars(select(InboundLog)).one()
        assert row.status == "rejected"
        assert "nobody@company.example" in row.reason


def test_an_address_bound_after_a_refusal_is_accepted_at_once(eng: Factory, served: Served) -> None:
    with smtp(served) as client:
        client.ehlo()
        client.mail("alice@company.example")
        refused, _ = client.rcpt("ops@company.example")
        client.rset()
        eng.binding("ops@company.example", "eng")
        client.mail("alice@company.example")
        accepted, text = client.rcpt("ops@company.example")
    assert refused == 550
    assert (accepted, text[:5]) == (250, b"2.1.5")


def test_accepted_recipients_expire() -> None:
    remembered, expired = AcceptedRecipients(ttl=60), AcceptedRecipients(ttl=0)
    for cache in (remembered, expired):
        cache.add("eng@company.example")
    assert "eng@company.example" in remembered
    assert "ops@company.example" not in remembered
    assert "eng@company.example" not in expired


def test_it_is_not_an_open_relay(eng: Factory, served: Served) -> None:
    with smtp(served) as client:
        client.ehlo()
        client.mail("alice@company.example")
        code, text = client.rcpt("victim@elsewhere.example")
    assert code == 550
    assert text.startswith(b"5.7.1")


def test_it_refuses_a_non_member_with_the_reason(
    eng: Factory, served: Served, db: Database
) -> None:
    with smtp(served) as client, pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(make_mail(sender="mallory@evil.example"))
    error: object = caught.value.smtp_error  # bytes at run time; typeshed says str
    assert caught.value.smtp_code == 550
    assert isinstance(error, bytes)
    assert error.startswith(b"5.7.1")
    assert b"not a member" in error
    assert count(db, Post) == 0
    with db.reader() as session:
        row = session.scalars(select(InboundLog)).one()
        assert (row.status, row.sha256 is not None) == ("rejected", True)
        assert "mallory@evil.example" in row.reason


def test_it_refuses_oversize_mail_with_552_and_records_it(
    eng: Factory, served: Served, db: Database
) -> None:
    big = make_mail(body="x" * 80 + "\n" * 1 + ("y" * 76 + "\n") * 20_000)  # > 1 MiB limit
    with smtp(served) as client, pytest.raises(smtplib.SMTPException) as caught:
        client.send_message(big)
    assert "552" in str(caught.value)
    assert "5.3.4" in str(caught.value)
    wait_for_log(db)
    with db.reader() as session:
        row = session.scalars(select(InboundLog)).one()
        assert row.status == "rejected"
        assert "larger than the limit" in row.reason


def test_the_same_message_id_twice_makes_one_post(
    eng: Factory, served: Served, db: Database
) -> None:
    with smtp(served) as client:
        client.send_message(make_mail())
        client.send_message(make_mail())
    assert count(db, Post) == 1
    with db.reader() as session:
        statuses = session.scalars(select(InboundLog.status).order_by(InboundLog.id)).all()
        assert statuses == ["accepted", "ignored"]


def test_two_addresses_of_one_group_make_one_post(
    eng: Factory, served: Served, db: Database
) -> None:
    eng.binding("engineering@company.example", "eng")
    with smtp(served) as client:
        client.send_message(
            make_mail(to="eng@company.example, engineering@company.example"),
        )
    assert count(db, Post) == 1


def test_it_routes_by_envelope_not_by_to_header(eng: Factory, served: Served, db: Database) -> None:
    eng.group("sales")
    eng.member("sales", "alice@company.example")
    eng.binding("sales@company.example", "sales")
    with smtp(served) as client:
        client.send_message(make_mail(to="eng@company.example"), to_addrs=["sales@company.example"])
    with db.reader() as session:
        post = session.scalars(select(Post)).one()
        assert post.thread.group.slug == "sales"


def test_a_bounce_is_recorded_as_ignored_and_never_posted(
    eng: Factory, served: Served, db: Database
) -> None:
    bounce = make_mail(
        sender="mailer-daemon@company.example",
        subject="Undelivered Mail Returned to Sender",
        body="This is the mail system at host mx.company.example.\n",
        Auto_Submitted="auto-replied",
    )
    with smtp(served) as client:
        client.send_message(bounce)
    assert count(db, Post) == 0
    with db.reader() as session:
        assert session.scalars(select(InboundLog.status)).one() == "ignored"


def test_lmtp_answers_once_per_recipient(eng: Factory, served: Served, db: Database) -> None:
    eng.group("ops")
    eng.binding("ops@company.example", "ops", senders="members")  # alice is not an ops member
    with smtplib.LMTP("127.0.0.1", served.lmtp_port, timeout=10) as client:
        client.ehlo()  # sends LHLO
        client.mail("alice@company.example")
        assert client.rcpt("eng@company.example")[0] == 250
        assert client.rcpt("ops@company.example")[0] == 250
        # RFC 2033 §4.2: after DATA, one reply per accepted recipient, in RCPT order.
        # smtplib returns the first; the second is read off the same connection.
        first = client.data(make_mail(to="eng@company.example, ops@company.example").as_bytes())
        second = client.getreply()
    assert first[0] == 250
    assert second[0] == 550
    assert second[1].startswith(b"5.7.1")
    assert count(db, Post) == 1


def test_an_internal_failure_is_451_and_a_retry_delivers(
    eng: Factory, served: Served, db: Database, settings: Settings
) -> None:
    # A file where the blob store's folder should be: storage fails for real.
    settings.blob_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(settings.blob_dir, ignore_errors=True)
    settings.blob_dir.write_text("not a folder")
    with smtp(served) as client, pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(make_mail())
    assert (caught.value.smtp_code, str(caught.value.smtp_error)[:7]) == (451, "b'4.3.0")
    assert count(db, Post) == 0
    settings.blob_dir.unlink()
    with smtp(served) as client:
        assert client.send_message(make_mail()) == {}
    assert count(db, Post) == 1


def test_it_limits_recipients_per_message(eng: Factory, served: Served) -> None:
    with smtp(served) as client:
        client.ehlo()
        client.mail("alice@company.example")
        codes = [client.rcpt("eng@company.example")[0] for _ in range(51)]
    assert codes[:50] == [250] * 50
    assert codes[50] == 452


def test_a_member_may_post_from_an_alias_and_is_the_author(
    eng: Factory, served: Served, db: Database
) -> None:
    with eng.db.transaction() as session:
        admin.add_user_alias(session, "bob@company.example", "Bob.Stone@Home.example")
    with smtp(served) as client:
        assert client.send_message(make_mail(sender="bob.stone@home.example")) == {}
    with db.reader() as session:
        post = session.scalars(select(Post)).one()
        assert (post.author_email, post.author_name) == ("bob.stone@home.example", "Bob Stone")
        assert post.author_id is not None
