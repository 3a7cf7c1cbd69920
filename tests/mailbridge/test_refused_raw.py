"""Refused mail keeps its header and the start of its body; old refused and
ignored raw mail is purged; a blob that a row still names is never deleted."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from feed.base import utcnow
from feed.blobrefs import discard_unreferenced, pin_stored
from feed.blobs import BlobStore
from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Attachment
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.refused_raw import refused_excerpt
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from mailbridge.server import purge_daily
from tests.cli import run
from tests.conftest import Factory

KEEP = 64 * 1024
MEMBERS = "eng@company.example"  # members only
ANYONE = "open@company.example"  # anyone may post


@pytest.fixture(autouse=True)
def groups(make: Factory) -> None:
    make.user("alice@company.example", "Alice")
    make.group("eng")
    make.member("eng", "alice@company.example")
    make.binding(MEMBERS, "eng")
    make.group("open")
    make.binding(ANYONE, "open", senders="anyone")


def big_mail(sender: str, to: str, message_id: str = "<big-1@evil.example>") -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Big"
    message["Message-ID"] = message_id
    message.set_content("Buy now.\n" + "spam spam spam spam\n" * 15_000)
    message.add_attachment(os.urandom(200_000), maintype="application", subtype="octet-stream")
    return message.as_bytes(policy=SMTP)


def deliver(pipeline: Pipeline, data: bytes, *rcpts: str) -> None:
    pipeline.deliver(RawMessage(data, Envelope("x@evil.example", rcpts), Source.SMTP))


def rows(db: Database) -> list[InboundLog]:
    with db.reader() as session:
        found = list(session.scalars(select(InboundLog).order_by(InboundLog.id)))
        session.expunge_all()  # loaded as they are, for after the session
        return found


def blob_files(store: BlobStore) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in store.root.glob("??/*") if len(p.name) == 64}


def make_old(db: Database, days: int) -> None:
    with db.transaction() as session:
        session.execute(update(InboundLog).values(received_at=utcnow() - timedelta(days=days)))


def age_files(store: BlobStore, seconds: float) -> None:
    for path in store.root.glob("??/*"):
        past = time.time() - seconds
        os.utime(path, (past, past))


def test_the_excerpt_is_the_header_and_the_first_bytes_of_the_body() -> None:
    header = b"From: a@b.example\r\nSubject: x\r\n\r\n"
    assert refused_excerpt(header + b"y" * 100, 40) == header + b"y" * 40
    assert refused_excerpt(header + b"short", 40) == header + b"short"
    assert refused_excerpt(b"a\nb\n\n" + b"z" * 100, 8) == b"a\nb\n\n" + b"z" * 8
    assert refused_excerpt(b"H" * 100, 10) == b"H" * 20  # no end of header in sight


def test_refused_mail_keeps_an_excerpt_and_its_full_bytes_go(
    pipeline: Pipeline, db: Database
) -> None:
    data = big_mail("mallory@evil.example", MEMBERS)
    assert len(data) > 4 * KEEP
    deliver(pipeline, data, MEMBERS)
    [row] = rows(db)
    assert (row.status, row.size) == ("rejected", len(data))
    assert "not a member" in row.reason
    assert f"of {len(data)} bytes" in row.reason
    assert row.sha256 is not None
    assert pipeline.blobs.get(row.sha256) == refused_excerpt(data, KEEP)
    # Only the excerpt is left: the full message and its attachment are gone.
    assert list(blob_files(pipeline.blobs)) == [row.sha256]


def test_a_message_accepted_by_one_group_and_refused_by_another_keeps_its_bytes(
    pipeline: Pipeline, db: Database
) -> None:
    data = big_mail("mallory@evil.example", f"{MEMBERS}, {ANYONE}")
    deliver(pipeline, data, MEMBERS, ANYONE)
    by_status = {row.status: row for row in rows(db)}
    accepted, refused = by_status["accepted"], by_status["rejected"]
    assert accepted.sha256 is not None
    assert refused.sha256 is not None
    assert pipeline.blobs.get(accepted.sha256) == data
    assert pipeline.blobs.get(refused.sha256) == refused_excerpt(data, KEEP)
    with db.reader() as session:
        [attachment] = session.scalars(select(Attachment.sha256))
    assert pipeline.blobs.exists(attachment)


def test_bytes_an_earlier_row_names_survive_a_refusal_of_the_same_bytes(
    pipeline: Pipeline, db: Database
) -> None:
    data = big_mail("mallory@evil.example", ANYONE)
    deliver(pipeline, data, ANYONE)  # accepted, and so are its attachment's bytes
    before = set(blob_files(pipeline.blobs))
    deliver(pipeline, data, MEMBERS)  # the same bytes, refused
    after = set(blob_files(pipeline.blobs))
    assert before < after  # only the refusal's excerpt was added
    assert len(rows(db)) == 2


def test_the_purge_expires_old_refused_and_ignored_raw_mail_and_keeps_the_rows(
    pipeline: Pipeline,
    db: Database,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    deliver(pipeline, big_mail("mallory@evil.example", MEMBERS, "<a@evil.example>"), MEMBERS)
    accepted = big_mail("alice@company.example", MEMBERS, "<b@company.example>")
    deliver(pipeline, accepted, MEMBERS)
    deliver(pipeline, accepted, MEMBERS)  # a duplicate: ignored, the same bytes
    make_old(db, 31)
    deliver(pipeline, big_mail("eve@evil.example", MEMBERS, "<c@evil.example>"), MEMBERS)
    statuses = [row.status for row in rows(db)]
    assert statuses == ["rejected", "accepted", "ignored", "rejected"]
    code, out, err = run(capsys, "inbound", "purge")
    assert code == 0, err
    assert out.startswith("2 inbound row(s) lost their raw message")
    old_refused, posted, duplicate, recent = rows(db)
    assert old_refused.sha256 is None
    assert "raw message deleted: kept 30 days" in old_refused.reason
    assert duplicate.sha256 is None
    assert "raw message deleted" in duplicate.reason
    assert posted.sha256 is not None
    assert pipeline.blobs.get(posted.sha256) == accepted
    assert recent.sha256 is not None
    assert pipeline.blobs.exists(recent.sha256)
    assert "deleted" not in recent.reason
    # The refusal's excerpt is gone; the posted bytes the duplicate shared are not.
    with db.reader() as session:
        attachments = set(session.scalars(select(Attachment.sha256)))
    assert set(blob_files(pipeline.blobs)) == {posted.sha256, recent.sha256} | attachments


def test_the_purge_sweeps_old_unnamed_blobs_and_leaves_young_ones(
    pipeline: Pipeline, db: Database, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = pipeline.blobs
    old = store.put(b"left behind by a crash")
    age_files(store, 2 * 3600)
    leftover = store.root / old[:2] / ".tmp-dead"
    leftover.write_bytes(b"half")
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    young = store.put(b"a delivery in flight")
    code, out, err = run(capsys, "inbound", "purge", "--older-than", "30")
    assert code == 0, err
    assert out.startswith("0 inbound row(s)")
    assert not store.exists(old)
    assert not leftover.exists()
    assert store.exists(young)


def test_a_bad_older_than_is_one_line(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "inbound", "purge", "--older-than", "-1")
    assert code == 2
    assert "--older-than" in err


def test_a_blob_pinned_by_an_open_transaction_is_not_deleted(db: Database, tmp_path: Path) -> None:
    """A deletion racing a delivery that is about to name the blob leaves it:
    SQLite makes it wait for the delivery's commit, PostgreSQL's pin makes it
    skip the blob."""
    store = BlobStore(tmp_path / "blobs")
    data = b"shared bytes"
    digest = store.put(data)
    deletion: list[int] = []
    with db.transaction() as session:
        conn = session.connection()
        pin_stored(conn, store, [(digest, data)])
        racer = threading.Thread(
            target=lambda: deletion.append(discard_unreferenced(db, store, [digest]))
        )
        racer.start()
        racer.join(0.5)
        conn.execute(
            insert(InboundLog).values(
                source="smtp", status="accepted", sha256=digest, received_at=utcnow()
            )
        )
    racer.join(30)
    assert deletion == [0]
    assert store.get(digest) == data


def test_a_pin_writes_again_a_blob_deleted_before_it(db: Database, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = store.put(b"bytes")
    assert discard_unreferenced(db, store, [digest]) == len(b"bytes")
    assert not store.exists(digest)
    with db.transaction() as session:
        pin_stored(session.connection(), store, [(digest, b"bytes")])
    assert store.get(digest) == b"bytes"


def test_serve_runs_the_purge_at_start_and_again_after_its_interval(
    settings: Settings, pipeline: Pipeline, db: Database
) -> None:
    store = pipeline.blobs
    first = store.put(b"orphan one")
    age_files(store, 2 * 3600)

    async def two_runs() -> None:
        task = asyncio.create_task(purge_daily(settings, pipeline, timedelta(seconds=0.2), 0))
        deadline = time.monotonic() + 20  # only catches a hang
        while store.exists(first) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        second = store.put(b"orphan two")
        age_files(store, 2 * 3600)
        while store.exists(second) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        assert not store.exists(first)
        assert not store.exists(second)

    asyncio.run(two_runs())
