"""Helpers the IMAP importer's tests share: bind a Dovecot folder, run the importer, wait.

The importer runs as `mailbridge serve` runs it (a `MailboxService` in an
asyncio loop, deliveries through the same `Deliverer` as SMTP), with short
timings (`FAST`). `add_imap` does the binding through the `mailbridge` command.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import func, select

from feed.bindings import ImapBinding
from feed.db import Database
from feed.inbound import InboundLog
from feed.mailboxes import ImapSpec, add_imap_binding, list_imap_bindings
from feed.posts import Post
from mailbridge.config import Settings
from mailbridge.imap.runner import MailboxService, Timing
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.workers import thread_deliverer
from tests.cli import run as run_command
from tests.imap.conftest import USERS
from tests.imap.dovecot import Dovecot
from tests.imap.dovecot_config import HOST

FAST = Timing(
    idle=20.0,
    poll=1.0,
    retry_failed=0.5,
    backoff_first=0.2,
    backoff_max=1.0,
    refresh=0.5,
    command_timeout=5.0,
    login_refused=2.0,
)
WAIT = 20.0


def mail(number: int, *, subject: str = "") -> bytes:
    return (
        f"From: Carol <carol@customer.example>\r\nTo: support@company.example\r\n"
        f"Subject: {subject or f'Case {number}'}\r\n"
        f"Message-ID: <case-{number}@customer.example>\r\n"
        f"Date: Thu, 03 Dec 2026 09:00:00 +0000\r\n"
        f"\r\nPlease look at case {number}.\r\n"
    ).encode()


def bind(
    db: Database,
    settings: Settings,
    dovecot: Dovecot,
    name: str = "desk",
    *,
    user: str = "alice",
    password: str | None = None,
    folder: str = "INBOX",
    after: str = "seen",
) -> None:
    """Bind a folder of `dovecot` to the group `support`, over TLS if it serves TLS."""
    spec = ImapSpec(
        name,
        "support",
        HOST,
        dovecot.port,
        user,
        USERS[user] if password is None else password,
        folder=folder,
        tls="implicit" if dovecot.tls else "none",
        after=after,
        senders="anyone",
    )
    with db.transaction() as session:
        add_imap_binding(session, settings.secret_key, spec)


def add_imap(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dovecot: Dovecot,
    password: str,
    *extra: str,
) -> tuple[int, str, str]:
    """`mailbridge binding add-imap desk` for alice's INBOX; TLS as `dovecot` serves it."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    return run_command(
        capsys,
        "binding",
        "add-imap",
        "desk",
        "--group",
        "support",
        "--host",
        HOST,
        "--port",
        str(dovecot.port),
        "--user",
        "alice",
        "--password-stdin",
        "--tls",
        "implicit" if dovecot.tls else "none",
        "--senders",
        "anyone",
        *extra,
    )


def posts(db: Database) -> int:
    with db.reader() as session:
        return session.scalar(select(func.count()).select_from(Post)) or 0


def distinct_posted(db: Database) -> int:
    with db.reader() as session:
        return session.scalar(select(func.count(func.distinct(Post.message_id)))) or 0


def inbound_rows(db: Database, status: str | None = None) -> int:
    """Inbound-log rows, of one status or all."""
    query = select(func.count()).select_from(InboundLog)
    if status is not None:
        query = query.where(InboundLog.status == status)
    with db.reader() as session:
        return session.scalar(query) or 0


def cursor(db: Database) -> tuple[int, int | None, int]:
    """The one binding's (last UID, failing UID, its attempts)."""
    with db.reader() as session:
        row = session.execute(
            select(ImapBinding.last_uid, ImapBinding.stuck_uid, ImapBinding.stuck_attempts)
        ).one()
    return row[0], row[1], row[2]


def state(db: Database, name: str) -> tuple[str, str | None]:
    with db.reader() as session:
        found = {b.name: b for b in list_imap_bindings(session)}
    return found[name].state, found[name].last_error


async def until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def importing(
    pipeline: Pipeline, settings: Settings, timing: Timing = FAST
) -> AsyncIterator[MailboxService]:
    deliverer = thread_deliverer(pipeline)
    service = MailboxService(pipeline, deliverer, settings.secret_key, timing)
    await service.start()
    try:
        yield service
    finally:
        await service.close()
        await deliverer.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 120))
