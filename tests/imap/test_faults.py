"""Faults found in review, each once a way to lose, block or leak: a failing
message deleted by a user, news arriving mid-sync, a non-ASCII folder, a
database hiccup while a failure is recorded, a quoted password at DEBUG."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence

import pytest

from feed.db import Database
from mailbridge.config import Settings
from mailbridge.imap.client import ImapClient, Mailbox
from mailbridge.imap.names import quote_mailbox
from mailbridge.imap.runner import MailboxRunner, MailboxService
from mailbridge.pipeline.deliver import DeliveryReport, Pipeline
from mailbridge.pipeline.types import RawMessage
from mailbridge.workers import process_deliverer, thread_deliverer
from tests.imap.dovecot import Dovecot
from tests.imap.dovecot_config import HOST
from tests.imap.harness import (
    FAST,
    bind,
    cursor,
    distinct_posted,
    importing,
    inbound_rows,
    mail,
    posts,
    run,
    state,
    until,
)
from tests.poison import POISON_SUBJECT, posts_titled_poison_refused

pytestmark = pytest.mark.usefixtures("support_group")


def test_a_failing_message_deleted_by_a_user_frees_the_cursor(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    dovecot.append("alice", "INBOX", mail(1))
    bad = dovecot.append("alice", "INBOX", mail(2, subject=POISON_SUBJECT))
    dovecot.append("alice", "INBOX", mail(3))
    bind(db, settings, dovecot)

    def expunge(uid: int) -> None:
        with dovecot.client("alice") as imap:
            imap.select("INBOX")
            imap.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
            imap.expunge()

    async def scenario() -> None:
        with posts_titled_poison_refused(db):
            async with importing(pipeline, settings):
                await until(lambda: cursor(db)[1] == bad, "the bad message to hold the cursor")
                await asyncio.to_thread(expunge, bad)  # a user of the shared mailbox
                await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(4))
                await until(lambda: posts(db) == 3, "messages 1, 3 and 4")
                await until(lambda: cursor(db)[1:] == (None, 0), "nothing holding the cursor")
                await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(5))
                await until(lambda: cursor(db) == (5, None, 0), "the cursor past all of them")

    run(scenario)


def test_a_message_arriving_during_a_sync_is_fetched_at_once(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    dovecot.append("alice", "INBOX", mail(1))
    bind(db, settings, dovecot)

    async def scenario() -> None:
        deliverer = thread_deliverer(pipeline)
        deliver = deliverer.deliver_together
        appended = False

        # A hook, not a stand-in: the real delivery runs, and a real APPEND
        # lands while the first batch is being delivered.
        async def append_during(raws: Sequence[RawMessage]) -> list[DeliveryReport]:
            nonlocal appended
            if not appended:
                appended = True
                await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(2))
            return await deliver(raws)

        deliverer.deliver_together = append_during  # type: ignore[method-assign]
        service = MailboxService(pipeline, deliverer, settings.secret_key, FAST)
        await service.start()
        try:
            # FAST.idle is 20 s: well before it, or the news was lost.
            await until(lambda: posts(db) == 2, "the message that arrived mid-sync", 8)
        finally:
            await service.close()
            await deliverer.close()

    run(scenario)


def test_a_folder_with_a_non_ascii_name_is_imported(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    folder = "Archivé"
    dovecot.create_folder("alice", folder)
    dovecot.append("alice", folder, mail(1))
    assert quote_mailbox(folder) == '"Archiv&AOk-"'
    bind(db, settings, dovecot, folder=folder)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: posts(db) == 1, "the message in the non-ASCII folder", 8)
            await until(lambda: state(db, "desk")[0] == "idle", "the binding idle")

    run(scenario)


def test_a_database_hiccup_while_recording_a_failure_does_not_end_the_binding(
    pipeline: Pipeline,
    db: Database,
    settings: Settings,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bind(db, settings, dovecot, password="wrong")  # fails at every login
    record = MailboxRunner._state
    failures = 0

    # Fault injection: the first write of a "refused" state raises, as a
    # locked SQLite file or a restarting PostgreSQL would; the rest are real.
    async def hiccup(
        runner: MailboxRunner, state: str, error: str | None = None, *, synced: bool = False
    ) -> None:
        nonlocal failures
        if state == "refused":
            failures += 1
            if failures == 1:
                raise RuntimeError("the database is briefly unavailable")
        await record(runner, state, error, synced=synced)

    monkeypatch.setattr(MailboxRunner, "_state", hiccup)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: failures >= 3, "the binding to keep retrying after the hiccup")
            await until(lambda: state(db, "desk")[0] == "refused", "its state recorded")

    run(scenario)


def test_the_password_is_not_logged_at_debug_level_even_with_a_quote_in_it(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    password = 'Tr0ub4dor"&3'
    dovecot.add_user("carol", password)

    async def scenario() -> None:
        client = await ImapClient.open(Mailbox(HOST, dovecot.port, False, "carol", password))
        await client.close()

    with caplog.at_level(logging.DEBUG):  # as under `mailbridge serve --log-level debug`
        run(scenario)
    assert "Sending" in caplog.text  # aioimaplib's DEBUG lines were on
    assert "Tr0ub4dor" not in caplog.text


def test_a_worker_killed_under_a_chunk_costs_no_message(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    for number in range(1, 7):
        dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, dovecot)

    async def scenario() -> None:
        deliverer = process_deliverer(settings, 2)
        await asyncio.sleep(0.5)  # the workers have started
        for worker in multiprocessing.active_children():
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGKILL)  # the first chunk meets a broken pool
        await asyncio.sleep(0.2)
        service = MailboxService(pipeline, deliverer, settings.secret_key, FAST)
        await service.start()
        try:
            await until(lambda: posts(db) == 6, "every message after the pool was rebuilt", 60)
            await until(lambda: state(db, "desk")[0] == "idle", "the binding idle")
        finally:
            await service.close()
            await deliverer.close()

    run(scenario)
    assert distinct_posted(db) == posts(db) == 6
    assert cursor(db) == (6, None, 0)
    assert inbound_rows(db, "rejected") == 0
