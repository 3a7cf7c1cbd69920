"""postmaster@ every local domain: accepted (RFC 5321 §4.5.1), kept for the admins."""

from __future__ import annotations

import smtplib

import pytest
from sqlalchemy import Row, select

from feed.blobs import BlobStore
from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Post
from mailbridge.config import Settings
from tests.conftest import MAIL_DOMAIN, Factory
from tests.mailbridge.conftest import Served
from tests.mailbridge.test_smtp import count, make_mail, smtp
from tests.web.conftest import api_get
from web.app import create_app

POSTMASTER = f"postmaster@{MAIL_DOMAIN}"


def log_rows(db: Database) -> list[Row[str, str, str, int | None, str | None]]:
    columns = (InboundLog.status, InboundLog.rcpt_to, InboundLog.subject)
    query = select(*columns, InboundLog.group_id, InboundLog.sha256).order_by(InboundLog.id)
    with db.reader() as session:
        return list(session.execute(query).all())


def test_postmaster_of_the_mail_domain_gets_mail_kept_for_the_admins(
    eng: Factory, served: Served, db: Database, settings: Settings
) -> None:
    message = make_mail(sender="stranger@elsewhere.example", to=POSTMASTER, subject="Your MX")
    with smtp(served) as client:
        client.ehlo()
        client.mail("stranger@elsewhere.example")
        assert client.rcpt(POSTMASTER) == (250, b"2.1.5 Recipient OK")
        assert client.data(message.as_bytes())[0] == 250
    assert count(db, Post) == 0
    (row,) = log_rows(db)
    assert (row.status, row.rcpt_to, row.subject) == ("postmaster", POSTMASTER, "Your MX")
    assert row.group_id is None
    assert row.sha256 is not None
    assert b"Subject: Your MX" in BlobStore(settings.blob_dir).get(row.sha256)


@pytest.mark.parametrize("recipient", ["Postmaster", "POSTMASTER@company.example"])
def test_postmaster_unqualified_or_at_a_bound_domain_is_accepted(
    eng: Factory, served: Served, db: Database, recipient: str
) -> None:
    with smtp(served) as client:
        refused = client.send_message(make_mail(to=recipient), to_addrs=[recipient])
    assert refused == {}
    assert [row.status for row in log_rows(db)] == ["postmaster"]


def test_postmaster_of_a_foreign_domain_is_still_relaying(eng: Factory, served: Served) -> None:
    with smtp(served) as client:
        client.ehlo()
        client.mail("alice@company.example")
        code, text = client.rcpt("postmaster@elsewhere.example")
    assert (code, text[:5]) == (550, b"5.7.1")


def test_a_message_to_a_group_and_the_postmaster_posts_once_and_is_kept(
    eng: Factory, served: Served, db: Database
) -> None:
    with smtplib.LMTP("127.0.0.1", served.lmtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("alice@company.example")
        assert client.rcpt("eng@company.example")[0] == 250
        assert client.rcpt(POSTMASTER)[0] == 250
        first = client.data(make_mail(to=f"eng@company.example, {POSTMASTER}").as_bytes())
        second = client.getreply()
    assert (first[0], second[0]) == (250, 250)
    assert count(db, Post) == 1
    statuses = sorted((row.status, row.rcpt_to) for row in log_rows(db))
    assert statuses == [("accepted", "eng@company.example"), ("postmaster", POSTMASTER)]


def test_admins_list_postmaster_mail_through_the_api(
    eng: Factory, served: Served, db: Database, settings: Settings
) -> None:
    eng.user("root@company.example", is_admin=True)
    with smtp(served) as client:
        client.send_message(make_mail(to=POSTMASTER, subject="Abuse report"))
        client.send_message(make_mail(message_id="<other@company.example>"))
    web = create_app(settings, db).test_client()
    response = api_get(web, "/api/v1/inbound?status=postmaster", eng.token("root@company.example"))
    assert response.status_code == 200
    (entry,) = response.get_json()["inbound"]
    assert (entry["subject"], entry["status"], entry["rcpt_to"]) == (
        "Abuse report",
        "postmaster",
        [POSTMASTER],
    )
    assert entry["reason"] == "for the postmaster: kept for the administrators"
