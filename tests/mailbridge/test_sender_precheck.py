"""The sender policy is checked before extraction: a stranger's mail to a
members-only address is refused without its content ever being extracted
(mail large enough to be worth the check: precheck.PRECHECK_MIN_BYTES)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from feed.db import Database
from feed.inbound import InboundLog
from mailbridge.message import ParsedMessage
from mailbridge.pipeline import deliver as deliver_module
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.extract import Content, extract_content
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from tests.conftest import Factory

MEMBERS_ONLY = "eng@company.example"
OPEN = "open@company.example"


@pytest.fixture(autouse=True)
def eng(make: Factory) -> None:
    make.user("alice@company.example")
    make.group("eng")
    make.member("eng", "alice@company.example")
    make.binding(MEMBERS_ONLY, "eng")
    make.group("open")
    make.binding(OPEN, "open", senders="anyone")


@pytest.fixture
def extracted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The subjects of the messages the pipeline extracted, in order."""
    seen: list[str] = []
    real: Callable[[ParsedMessage], Content] = extract_content

    def counting(message: ParsedMessage) -> Content:
        seen.append(message.subject)
        return real(message)

    monkeypatch.setattr(deliver_module, "extract_content", counting)
    return seen


POISON = "\r\n" * 50_000  # blank lines: costly to trim before issue 8's fixes
PROSE = "A line of an ordinary long report, nothing to trim in it.\r\n" * 400  # 24 KB


def raw(sender: str, subject: str, *recipients: str, body: str = POISON) -> RawMessage:
    data = (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@x>\r\n\r\n{body}"
    ).encode()
    return RawMessage(data, Envelope(sender, recipients), Source.SMTP)


def test_a_stranger_to_members_only_is_refused_without_extraction(
    pipeline: Pipeline, db: Database, extracted: list[str]
) -> None:
    report = pipeline.deliver(raw("mallory@evil.example", "poison", MEMBERS_ONLY))
    assert extracted == []
    assert str(report.combined_reply()) == (
        "550 5.7.1 mallory@evil.example is not a member of the group"
    )
    with db.reader() as session:
        row = session.execute(select(InboundLog.status, InboundLog.reason, InboundLog.sha256)).one()
    assert row.status == "rejected"
    # The refusal keeps an excerpt of the message (see pipeline.refused_raw).
    assert row.reason.startswith(
        "sender refused by members policy: mallory@evil.example is not a member of the group"
        " [raw message cut: header and start,"
    )
    assert row.sha256 is not None


def test_unrouted_mail_is_not_extracted(pipeline: Pipeline, extracted: list[str]) -> None:
    report = pipeline.deliver(raw("mallory@evil.example", "lost", "gone@company.example"))
    assert report.combined_reply().code == 550
    assert extracted == []


def test_mail_some_route_takes_is_extracted_once(pipeline: Pipeline, extracted: list[str]) -> None:
    member = pipeline.deliver(raw("alice@company.example", "member", MEMBERS_ONLY, body=PROSE))
    stranger = pipeline.deliver(
        raw("mallory@evil.example", "mixed", MEMBERS_ONLY, OPEN, body=PROSE)
    )
    assert member.outcomes[MEMBERS_ONLY].accepted
    assert stranger.outcomes[OPEN].accepted
    assert stranger.outcomes[MEMBERS_ONLY].reply.code == 550
    assert extracted == ["member", "mixed"]


def test_a_sender_admitted_since_the_pre_check_is_deferred_not_posted_empty(
    pipeline: Pipeline, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if Alice became a member between the pre-check and the write.
    monkeypatch.setattr(deliver_module, "sender_may_post", lambda *_: False)
    report = pipeline.deliver(raw("alice@company.example", "late", MEMBERS_ONLY, body=PROSE))
    assert report.outcomes[MEMBERS_ONLY].deferred
    with db.reader() as session:
        assert session.scalar(select(InboundLog.id)) is None  # nothing recorded: a retry comes
