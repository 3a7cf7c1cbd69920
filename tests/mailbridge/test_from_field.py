"""A From field that tries to look like someone else (pipeline/authors.py).

The author is the actual address, never the display text; the posting
decision uses the From domain as DMARC would (RFC 7489 §6.6.1), and no one
when several From mailboxes are in different domains.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Post
from mailbridge.message import Address
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.parse import parse_message
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from tests.conftest import Factory


def parsed_from(value: str) -> tuple[Address | None, str, tuple[Address, ...]]:
    parsed = parse_message(f"From: {value}\nSubject: x\n\nbody\n".encode())
    assert parsed.from_warning == "" or f"suspicious From: {parsed.from_warning}" in parsed.defects
    return parsed.sender, parsed.from_warning, parsed.trusted_authors()


@pytest.mark.parametrize(
    "value",
    [
        "carol@company.example <eve@other.example>",
        "<carol@company.example> <eve@other.example>",
        '"carol@company.example" <eve@other.example>',
        "=?utf-8?q?carol=40company.example?= <eve@other.example>",
        "Carol (carol@company.example) <Eve@Other.Example>",
    ],
)
def test_a_display_text_that_is_another_address_is_never_the_author(value: str) -> None:
    sender, warning, trusted = parsed_from(value)
    assert sender == Address("eve@other.example")  # the display text is dropped
    assert trusted == (sender,)
    assert warning == "display text carol@company.example is not the address eve@other.example"


@pytest.mark.parametrize(
    "value",
    ["carol@company.example, eve@other.example", "carol@company.example eve@other.example"],
)
def test_several_from_domains_trust_no_author(value: str) -> None:
    sender, warning, trusted = parsed_from(value)
    assert sender == Address("carol@company.example")
    assert trusted == ()
    assert warning == "From names several addresses: carol@company.example, eve@other.example"


def test_several_from_addresses_in_one_domain_are_suspicious_and_all_judged() -> None:
    sender, warning, trusted = parsed_from("carol@company.example, eve@company.example")
    assert sender == Address("carol@company.example")
    assert trusted == (sender, Address("eve@company.example"))
    assert warning.startswith("From names several addresses")


def test_two_from_fields_are_suspicious() -> None:
    parsed = parse_message(b"From: carol@company.example\nFrom: eve@other.example\n\nbody\n")
    assert parsed.trusted_authors() == ()
    assert parsed.from_warning.startswith("several From fields")


CAROL = "carol@company.example"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Carol <carol@company.example>", Address(CAROL, "Carol")),
        ('"Smith, Carol" <carol@company.example>', Address(CAROL, "Smith, Carol")),
        ('"carol@company.example" <Carol@Company.Example>', Address(CAROL, CAROL)),
        ("carol@company.example", Address(CAROL)),
        ("Whomever", Address("", "Whomever")),
    ],
)
def test_ordinary_from_fields_are_not_suspicious(value: str, expected: Address) -> None:
    assert parsed_from(value) == (expected, "", (expected,) if expected.email else ())


# Through the pipeline: the members-only door goes by the real address.

MEMBERS_ONLY = "eng@company.example"
OPEN = "open@company.example"


@pytest.fixture(autouse=True)
def groups(make: Factory) -> None:
    make.user("carol@company.example", "Carol")
    make.group("eng")
    make.member("eng", "carol@company.example")
    make.binding(MEMBERS_ONLY, "eng")
    make.group("open")
    make.binding(OPEN, "open", senders="anyone")


def send(pipeline: Pipeline, from_: str, to: str) -> str:
    data = f"From: {from_}\r\nSubject: Hi\r\nMessage-ID: <{to}@x>\r\n\r\nHi\r\n".encode()
    report = pipeline.deliver(RawMessage(data, Envelope("eve@other.example", (to,)), Source.SMTP))
    return str(report.combined_reply())


DISPLAY = "display text carol@company.example is not the address eve@other.example"
NOT_A_MEMBER = "eve@other.example is not a member"
SAME = "From names several addresses: carol@company.example, eve@company.example"
BOTH = "From names several addresses: carol@company.example, eve@other.example"


@pytest.mark.parametrize(
    ("from_", "refusal", "warning"),
    [
        ("carol@company.example <eve@other.example>", NOT_A_MEMBER, DISPLAY),
        ("<carol@company.example> <eve@other.example>", NOT_A_MEMBER, DISPLAY),
        ("carol@company.example, eve@other.example", "the From field names no author", BOTH),
        ("carol@company.example, eve@company.example", "eve@company.example is not", SAME),
    ],
)
def test_a_forged_member_is_refused_and_the_suspicion_recorded(
    pipeline: Pipeline, db: Database, from_: str, refusal: str, warning: str
) -> None:
    assert send(pipeline, from_, MEMBERS_ONLY).startswith(f"550 5.7.1 {refusal}")
    with db.reader() as session:
        reason = session.scalars(select(InboundLog.reason)).one()
        assert session.scalar(select(Post.id)) is None
    assert reason.startswith(f"sender refused by members policy: {refusal}")
    assert reason.endswith(f"(suspicious From: {warning})")


def test_an_open_door_posts_as_the_real_address_and_records_the_suspicion(
    pipeline: Pipeline, db: Database
) -> None:
    assert send(pipeline, "carol@company.example <eve@other.example>", OPEN).startswith("250")
    with db.reader() as session:
        post = session.execute(select(Post.author_email, Post.author_name, Post.author_id)).one()
        reason = session.scalars(select(InboundLog.reason)).one()
    assert tuple(post) == ("eve@other.example", "eve@other.example", None)
    assert reason == (
        "posted to group open (suspicious From: display text carol@company.example"
        " is not the address eve@other.example)"
    )
