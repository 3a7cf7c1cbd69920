"""The budget of bytes in flight: its arithmetic, and the doors' answers
while it is full (452 4.3.1 at MAIL and RCPT, 451 4.3.1 after DATA)."""

from __future__ import annotations

import dataclasses
import smtplib
import time
from collections.abc import Callable, Iterator

import pytest

from feed.db import Database
from feed.posts import Post
from mailbridge.budget import CLAIM_STEP, InFlightBudget, size_hint
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from tests.conftest import Factory
from tests.mailbridge.conftest import Served, serving
from tests.mailbridge.test_smtp import count, make_mail

BUDGET = 64 * 1024
NO_ROOM = b"4.3.1 Too much mail in progress, please try again later"


@pytest.fixture
def small_budget(eng: Factory, settings: Settings, pipeline: Pipeline) -> Iterator[Served]:
    with serving(dataclasses.replace(settings, max_bytes_in_flight=BUDGET), pipeline) as served:
        yield served


def until_refused(command: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
    """The first answer that is not a 250 (the server reads the other session's
    data when it gets to it)."""
    deadline = time.monotonic() + 10
    while (answer := command())[0] == 250 and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer


def test_a_claim_grows_in_steps_within_the_budget_and_is_given_back() -> None:
    budget = InFlightBudget(3 * CLAIM_STEP)
    first, second = budget.claim(), budget.claim()
    assert first.cover(10)
    assert budget.used == CLAIM_STEP  # one step, not ten bytes at a time
    assert first.cover(2 * CLAIM_STEP)
    assert not second.cover(CLAIM_STEP + 1)
    assert second.cover(CLAIM_STEP)
    assert not budget.has_room()
    first.release()
    assert budget.has_room(2 * CLAIM_STEP)
    assert not budget.has_room(2 * CLAIM_STEP + 1)


def test_the_size_hint_is_read_from_mail_options() -> None:
    assert size_hint(["BODY=8BITMIME", "SIZE=12345"]) == 12345
    assert size_hint(["BODY=8BITMIME"]) == 0


def test_mail_with_a_size_hint_over_the_budget_is_452_4_3_1(small_budget: Served) -> None:
    with smtplib.SMTP("127.0.0.1", small_budget.smtp_port, timeout=10) as client:
        client.ehlo()
        assert client.mail("alice@company.example", [f"SIZE={BUDGET + 1}"]) == (452, NO_ROOM)
        assert client.mail("alice@company.example", [f"SIZE={BUDGET // 2}"])[0] == 250


def test_data_over_the_budget_is_451_4_3_1_and_frees_it_again(
    small_budget: Served, db: Database
) -> None:
    big = make_mail(body=("z" * 76 + "\n") * 2_000)  # about 150 KB: under the size limit
    with smtplib.SMTP("127.0.0.1", small_budget.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("alice@company.example")  # no SIZE= hint: found out during DATA
        client.rcpt("eng@company.example")
        assert client.data(big.as_bytes()) == (451, NO_ROOM)
        assert client.send_message(make_mail()) == {}
    assert count(db, Post) == 1


def test_rcpt_and_mail_while_another_session_fills_the_budget_are_452_4_3_1(
    small_budget: Served,
) -> None:
    with (
        smtplib.SMTP("127.0.0.1", small_budget.smtp_port, timeout=10) as filling,
        smtplib.SMTP("127.0.0.1", small_budget.smtp_port, timeout=10) as other,
    ):
        other.ehlo()
        assert other.mail("alice@company.example")[0] == 250
        filling.ehlo()
        filling.mail("alice@company.example")
        filling.rcpt("eng@company.example")
        assert filling.docmd("DATA")[0] == 354
        filling.send(b"Subject: large\r\n\r\n" + b"z" * 76 * 1_000 + b"\r\n")  # over the budget
        # The DATA is still open: its claim holds the whole budget (once read).
        assert until_refused(lambda: other.rcpt("eng@company.example")) == (452, NO_ROOM)
        assert other.rset()[0] == 250
        assert other.mail("alice@company.example") == (452, NO_ROOM)
        filling.send(b".\r\n")
        assert filling.getreply() == (451, NO_ROOM)
        assert other.mail("alice@company.example")[0] == 250
