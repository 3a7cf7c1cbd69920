"""Each recipient is judged by its own binding's policy, whatever the RCPT order."""

from __future__ import annotations

import smtplib

import pytest
from sqlalchemy import select

from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Post
from tests.conftest import Factory
from tests.mailbridge.conftest import Served
from tests.mailbridge.test_smtp import count, make_mail, smtp

MEMBERS_ONLY = "eng@company.example"
OPEN = "eng-open@company.example"
ORDERS = [(MEMBERS_ONLY, OPEN), (OPEN, MEMBERS_ONLY)]


@pytest.fixture
def open_door(eng: Factory) -> None:
    eng.binding(OPEN, "eng", senders="anyone")


def statuses(db: Database) -> list[tuple[str, str]]:
    with db.reader() as session:
        rows = session.execute(select(InboundLog.rcpt_to, InboundLog.status)).all()
    return sorted((rcpt_to, status) for rcpt_to, status in rows)


@pytest.mark.parametrize("order", ORDERS)
def test_lmtp_answers_each_recipient_by_its_own_policy(
    open_door: None, served: Served, db: Database, order: tuple[str, str]
) -> None:
    message = make_mail(sender="mallory@evil.example", to=", ".join(order))
    with smtplib.LMTP("127.0.0.1", served.lmtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("mallory@evil.example")
        for recipient in order:
            assert client.rcpt(recipient)[0] == 250
        replies = [client.data(message.as_bytes()), client.getreply()]
    by_recipient = {
        rcpt: (code, text[:5]) for rcpt, (code, text) in zip(order, replies, strict=True)
    }
    assert by_recipient == {OPEN: (250, b"2.0.0"), MEMBERS_ONLY: (550, b"5.7.1")}
    assert count(db, Post) == 1
    assert statuses(db) == [(OPEN, "accepted"), (MEMBERS_ONLY, "rejected")]


@pytest.mark.parametrize("order", ORDERS)
def test_smtp_posts_once_whatever_the_order(
    open_door: None, served: Served, db: Database, order: tuple[str, str]
) -> None:
    with smtp(served) as client:
        refused = client.send_message(make_mail(sender="mallory@evil.example"), to_addrs=order)
    assert refused == {}
    with db.reader() as session:
        assert session.scalars(select(Post.author_email)).one() == "mallory@evil.example"
    assert statuses(db) == [(OPEN, "accepted"), (MEMBERS_ONLY, "rejected")]


@pytest.mark.parametrize("order", ORDERS)
def test_a_member_is_admitted_by_both_and_recorded_once(
    open_door: None, served: Served, db: Database, order: tuple[str, str]
) -> None:
    with smtp(served) as client:
        assert client.send_message(make_mail(), to_addrs=order) == {}
    assert count(db, Post) == 1
    assert statuses(db) == [(",".join(order), "accepted")]
