"""Refused RCPTs are recorded in a bounded number of rows, every one accounted for."""

from __future__ import annotations

import dataclasses
import re
import smtplib
import time

from sqlalchemy import select

from feed.db import Database
from feed.inbound import InboundLog
from mailbridge import replies
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.refusals import DETAILED, RefusalTally, rows_for_refusal
from mailbridge.pipeline.route import RecipientCheck
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from tests.conftest import Factory
from tests.mailbridge.conftest import serving


def reasons(db: Database) -> list[str]:
    with db.reader() as session:
        return list(session.scalars(select(InboundLog.reason).order_by(InboundLog.id)))


def wait_for_rows(db: Database, count: int, timeout: float = 10) -> list[str]:
    """The log's reasons once it has `count` rows (the summary is written
    after the connection closes); a generous deadline only catches a hang."""
    deadline = time.monotonic() + timeout
    while len(found := reasons(db)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def accounted(found: list[str]) -> int:
    """How many refusals the rows stand for: one each, or a summary's count."""
    total = 0
    for reason in found:
        summary = re.match(r"RCPT: (\d+) more refused", reason)
        total += int(summary.group(1)) if summary else 1
    return total


def test_a_session_of_many_refused_rcpts_leaves_a_few_rows_and_a_summary(
    make: Factory, settings: Settings, pipeline: Pipeline, db: Database
) -> None:
    make.group("eng")
    make.binding("eng@company.example", "eng")
    # Above the error limit that would close the session first (sessions.py).
    patient = dataclasses.replace(settings, mail_max_errors=100)
    with (
        serving(patient, pipeline) as served,
        smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=10) as client,
    ):
        client.ehlo()
        client.mail("mallory@evil.example")
        codes = [client.rcpt(f"user{n}@company.example")[0] for n in range(30)]
        codes += [client.rcpt(f"victim{n}@elsewhere.example")[0] for n in range(10)]
        assert client.rcpt("eng@company.example")[0] == 250
    assert set(codes) == {550}
    found = wait_for_rows(db, DETAILED + 1)
    assert len(found) == DETAILED + 1
    assert [r.startswith("RCPT user") for r in found[:DETAILED]] == [True] * DETAILED
    summary = found[-1]
    assert summary.startswith("RCPT: 35 more refused recipient(s)")
    assert f"25 x {replies.UNKNOWN_RECIPIENT}" in summary
    assert f"10 x {replies.RELAY_DENIED}" in summary
    assert accounted(found) == 40
    time.sleep(0.2)  # nothing more comes
    assert len(reasons(db)) == DETAILED + 1


def test_a_long_session_writes_a_summary_every_so_many_refusals(
    pipeline: Pipeline, db: Database
) -> None:
    tally = RefusalTally(detailed=2, summary_every=3)
    for n in range(10):
        address = f"user{n}@company.example"
        raw = RawMessage(b"", Envelope("mallory@evil.example", (address,)), Source.SMTP)
        check = RecipientCheck(address, replies.UNKNOWN_RECIPIENT)
        for row in rows_for_refusal(tally, raw, check.address, str(check.reply)):
            pipeline.record_refusal(*row)
    assert len(reasons(db)) == 2 + 2  # two of their own, two summaries of three
    summary = tally.take_summary()  # the session ends: the last two
    assert summary is not None
    pipeline.record_refusal(*summary)
    assert tally.take_summary() is None  # and nothing is written twice
    found = reasons(db)
    assert len(found) == 5
    assert accounted(found) == 10
    with db.reader() as session:
        last = session.scalars(select(InboundLog).order_by(InboundLog.id.desc())).first()
        assert last is not None
        assert (last.status, last.rcpt_to) == (
            "rejected",
            "user8@company.example,user9@company.example",
        )
