"""The database locked by another process: RCPTs still get prompt, plain
answers (never internal text, never a 5xx for our trouble), and mail flows
again once the lock is gone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from feed.db import Database
from feed.posts import Post
from mailbridge.pipeline.route import RecipientCheck
from mailbridge.recipients import RecipientChecks
from mailbridge.replies import OK_RECIPIENT
from tests.conftest import Factory
from tests.mailbridge.conftest import Served
from tests.mailbridge.test_smtp import count, make_mail, smtp

# Far below the 30 s a writer waits for SQLite's lock (and the 69 s a valid
# RCPT once waited): only catches a hang.
ANSWER_DEADLINE = 15.0


def rcpt(served: Served, address: str) -> tuple[int, bytes, float]:
    """One RCPT on a fresh connection: code, text and seconds it took."""
    with smtp(served) as client:
        client.ehlo()
        client.mail("alice@company.example")
        started = time.monotonic()
        code, reply = client.rcpt(address)
        return code, reply, time.monotonic() - started


@contextmanager
def sqlite_write_lock(db: Database) -> Iterator[None]:
    """Another process's `BEGIN EXCLUSIVE` (in WAL mode, readers go on)."""
    conn = sqlite3.connect(str(db.url.database), isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextmanager
def postgres_table_lock(db: Database, table: str) -> Iterator[None]:
    """Another session's `LOCK TABLE ... ACCESS EXCLUSIVE`: readers wait too."""
    engine = create_engine(make_url(db.url), poolclass=NullPool)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def test_refused_rcpts_do_not_wait_for_a_write_locked_sqlite(
    eng: Factory, served: Served, db: Database
) -> None:
    if db.url.get_backend_name() != "sqlite":
        pytest.skip("SQLite's write lock")
    addresses = [f"nobody{n}@company.example" for n in range(8)] + ["eng@company.example"]
    with sqlite_write_lock(db), ThreadPoolExecutor(len(addresses)) as pool:
        answers = list(pool.map(lambda address: rcpt(served, address), addresses))
    codes = [(code, reply[:5]) for code, reply, _ in answers]
    assert codes == [(550, b"5.1.1")] * 8 + [(250, b"2.1.5")]
    assert max(seconds for _, _, seconds in answers) < ANSWER_DEADLINE
    with smtp(served) as client:
        assert client.send_message(make_mail()) == {}
    assert count(db, Post) == 1


def test_rcpts_get_a_plain_451_while_postgresql_locks_the_bindings(
    eng: Factory, served: Served, db: Database
) -> None:
    if db.url.get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL's table lock")
    eng.binding("ops@company.example", "eng")
    assert rcpt(served, "eng@company.example")[0] == 250  # now known to the door
    with postgres_table_lock(db, "bindings"), ThreadPoolExecutor(9) as pool:
        addresses = [f"nobody{n}@company.example" for n in range(8)] + ["ops@company.example"]
        answers = list(pool.map(lambda address: rcpt(served, address), addresses))
        known = rcpt(served, "eng@company.example")
    for code, reply, seconds in answers:
        assert (code, reply) == (451, b"4.3.0 Temporary local problem, please try again later")
        assert seconds < ANSWER_DEADLINE
    assert known[:2] == (250, b"2.1.5 Recipient OK")  # the door's cache answers at once
    with smtp(served) as client:
        assert (
            client.send_message(
                make_mail(to="ops@company.example"), to_addrs=["ops@company.example"]
            )
            == {}
        )
    assert count(db, Post) == 1


def test_a_check_without_an_answer_in_time_is_none_and_holds_its_thread() -> None:
    release = threading.Event()
    started: list[str] = []

    def check(address: str, wait: float) -> RecipientCheck:
        started.append(address)
        release.wait(10)
        return RecipientCheck(address, OK_RECIPIENT, 1)

    async def scenario() -> list[RecipientCheck | None]:
        checks = RecipientChecks(check, threads=1, deadline=0.2)
        stuck = await checks.run("first@company.example")
        waiting = await checks.run("second@company.example")  # no free thread in time
        release.set()
        await asyncio.sleep(0.1)
        answered = await checks.run("third@company.example")
        checks.close()
        return [stuck, waiting, answered]

    stuck, waiting, answered = asyncio.run(scenario())
    assert (stuck, waiting) == (None, None)
    assert answered is not None
    assert answered.ok
    assert started == ["first@company.example", "third@company.example"]
