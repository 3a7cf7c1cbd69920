"""The IMAP door against a real Dovecot: each message of a bound folder
becomes one post, through IDLE pushes, restarts, outages and failures.

The importer runs as `mailbridge serve` runs it (a `MailboxService` in an
asyncio loop, deliveries through the same `Deliverer` as SMTP), with short
timings; every scenario ends by counting posts against distinct messages.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from feed.db import Database
from feed.inbound import InboundLog
from feed.mailboxes import list_imap_bindings
from mailbridge.config import Settings
from mailbridge.imap.client import FAILED_KEYWORD, IMPORTED_KEYWORD
from mailbridge.imap.sync import MAX_ATTEMPTS
from mailbridge.pipeline.deliver import Pipeline
from tests.imap.conftest import require_dovecot
from tests.imap.dovecot import Dovecot
from tests.imap.harness import (
    FAST,
    bind,
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


def test_a_bound_folder_feeds_the_group_once_and_marks_what_it_imported(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    for number in (1, 2, 3):
        dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, dovecot)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: posts(db) == 3, "the first three posts")
            await until(lambda: state(db, "desk")[0] == "idle", "the binding to go idle")
            for number in (4, 5):  # pushed by IDLE
                await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(number))
            await until(lambda: posts(db) == 5, "the two pushed messages")
            await until(
                lambda: all(
                    {"\\Seen", IMPORTED_KEYWORD} <= f
                    for f in dovecot.flags("alice", "INBOX").values()
                ),
                "every message flagged",
            )

    run(scenario)
    assert distinct_posted(db) == posts(db) == 5
    assert dovecot.message_count("alice", "INBOX") == 5


def test_a_server_without_idle_is_polled(
    pipeline: Pipeline, db: Database, settings: Settings, polled_dovecot: Dovecot
) -> None:
    for number in (1, 2):
        polled_dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, polled_dovecot)
    waited: list[float] = []

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: posts(db) == 2, "the existing messages")
            await until(lambda: state(db, "desk")[0] == "polling", "the binding to poll")
            appended = time.monotonic()
            await asyncio.to_thread(polled_dovecot.append, "alice", "INBOX", mail(3))
            # Nothing is pushed: the next poll finds it, a poll interval later or so.
            await until(lambda: posts(db) == 3, "the appended message", 4 * FAST.poll)
            waited.append(time.monotonic() - appended)
            await until(lambda: state(db, "desk") == ("polling", None), "polling again")

    run(scenario)
    assert distinct_posted(db) == posts(db) == 3
    assert waited[0] < 4 * FAST.poll


@pytest.mark.parametrize("after", ["move:Imported", "delete"])
def test_moved_or_deleted_once_posted(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot, after: str
) -> None:
    dovecot.create_folder("alice", "Imported")
    for number in (1, 2, 3):
        dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, dovecot, after=after)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: dovecot.message_count("alice", "INBOX") == 0, "an empty INBOX")

    run(scenario)
    assert distinct_posted(db) == posts(db) == 3
    moved = dovecot.message_count("alice", "Imported")
    assert moved == (3 if after.startswith("move") else 0)


def test_a_wrong_password_fails_its_binding_alone(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    dovecot.append("alice", "INBOX", mail(1))
    dovecot.append("bob", "INBOX", mail(2))
    bind(db, settings, dovecot, "desk")
    bind(db, settings, dovecot, "sales", user="bob", password="not-bobs-password")

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: state(db, "sales")[0] == "refused", "the bad binding to fail")
            await until(lambda: posts(db) == 1, "the good binding's post")
            await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(3))
            await until(lambda: posts(db) == 2, "the good binding to go on")
            # Read in one go while it waits to retry, not between two states.
            await until(refused, "the bad binding refused")
            await until(lambda: state(db, "desk") == ("idle", None), "the good binding idle")

    def refused() -> bool:
        status, error = state(db, "sales")
        found[:] = [error]
        return status == "refused"

    found: list[str | None] = []
    run(scenario)
    error = found[0]
    assert error is not None
    assert "login as bob" in error
    assert "AUTHENTICATIONFAILED" in error
    assert "not-bobs-password" not in error


def test_a_new_uidvalidity_reads_the_folder_again_without_posting_twice(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    for number in (1, 2):
        dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, dovecot)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: posts(db) == 2, "the first posts")
            await until(lambda: state(db, "desk")[0] == "idle", "the binding to go idle")
            # A rebuilt mailbox: new UIDVALIDITY, and our keyword lost on the way.
            await asyncio.to_thread(forget_our_keyword, dovecot)
            await asyncio.to_thread(dovecot.change_uidvalidity, "alice", "INBOX")
            await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(3))
            await until(lambda: posts(db) == 3, "the message after the change")
            # Messages 1 and 2 were delivered again and recognised by Message-ID.
            await until(
                lambda: inbound_rows(db, "ignored") == 2, "the re-read messages to be recognised"
            )

    run(scenario)
    assert distinct_posted(db) == posts(db) == 3


def forget_our_keyword(dovecot: Dovecot) -> None:
    with dovecot.client("alice") as imap:
        imap.select("INBOX")
        imap.uid("STORE", "1:*", "-FLAGS.SILENT", f"(\\Seen {IMPORTED_KEYWORD})")


def test_a_server_outage_during_idle_is_survived(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    dovecot.append("alice", "INBOX", mail(1))
    bind(db, settings, dovecot)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: state(db, "desk")[0] == "idle", "the binding to go idle")
            await asyncio.to_thread(dovecot.stop)
            await until(lambda: state(db, "desk")[0] == "backing off", "the binding to back off")
            await asyncio.to_thread(dovecot.start)
            await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(2))
            await until(lambda: posts(db) == 2, "the message sent after the outage")
            await until(lambda: state(db, "desk")[0] == "idle", "the binding to go idle again")

    run(scenario)
    assert distinct_posted(db) == posts(db) == 2


def test_a_folder_that_disappears_is_reported_and_picked_up_again(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    dovecot.create_folder("alice", "Support")
    dovecot.append("alice", "Support", mail(1))
    bind(db, settings, dovecot, folder="Support")

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: posts(db) == 1, "the first post")
            await asyncio.to_thread(dovecot.delete_folder, "alice", "Support")
            await until(lambda: state(db, "desk")[0] == "backing off", "the binding to back off")
            await asyncio.to_thread(dovecot.create_folder, "alice", "Support")
            await asyncio.to_thread(dovecot.append, "alice", "Support", mail(2))
            await until(lambda: posts(db) == 2, "the message in the new folder")

    run(scenario)
    assert distinct_posted(db) == posts(db) == 2


def test_a_message_that_keeps_failing_is_given_up_and_never_blocks_the_rest(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    dovecot.append("alice", "INBOX", mail(1))
    dovecot.append("alice", "INBOX", mail(2, subject=POISON_SUBJECT))
    dovecot.append("alice", "INBOX", mail(3))
    bind(db, settings, dovecot)

    async def scenario() -> None:
        with posts_titled_poison_refused(db):
            async with importing(pipeline, settings):
                await until(lambda: posts(db) == 2, "the messages around the bad one")
                await until(
                    lambda: inbound_rows(db, "rejected") == 1, "the bad one to be given up", 60
                )
                await until(
                    lambda: (
                        [
                            sorted(f & {"\\Seen", IMPORTED_KEYWORD, FAILED_KEYWORD})
                            for f in dovecot.flags("alice", "INBOX").values()
                        ]
                        == [
                            [IMPORTED_KEYWORD, "\\Seen"],
                            [FAILED_KEYWORD],  # left for a person, unread, in place
                            [IMPORTED_KEYWORD, "\\Seen"],
                        ]
                    ),
                    "every message settled",
                )

    run(scenario)
    assert distinct_posted(db) == posts(db) == 2
    with db.reader() as session:
        reason = session.scalar(select(InboundLog.reason).where(InboundLog.status == "rejected"))
    assert reason is not None
    assert f"failed {MAX_ATTEMPTS} times" in reason
    assert inbound_rows(db, "ignored") == 0  # message 3 was not delivered again at each retry


def test_dozens_of_bindings_sync_side_by_side_in_one_loop(
    pipeline: Pipeline, db: Database, settings: Settings
) -> None:
    require_dovecot()
    count = 24
    users = {f"desk{n}": f"secret-{n}" for n in range(count)}
    with Dovecot(users) as dovecot:
        for n, user in enumerate(users):
            dovecot.append(user, "INBOX", mail(n))
            bind(db, settings, dovecot, user, user=user, password=users[user])

        def all_idle() -> bool:
            with db.reader() as session:
                return all(b.state == "idle" for b in list_imap_bindings(session))

        async def scenario() -> None:
            async with importing(pipeline, settings):
                await until(lambda: posts(db) == count, "a post from every mailbox")
                await until(all_idle, "every binding idle")
                for n, user in enumerate(users):
                    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(count + n))
                await until(lambda: posts(db) == 2 * count, "the pushed messages")

        run(scenario)
    assert distinct_posted(db) == posts(db) == 2 * count
