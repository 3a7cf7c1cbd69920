"""Writers to a SQLite file take turns through a lock file beside it; a unit
of work may be given a deadline for the locks it waits for."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from feed.db import SQLITE_BUSY_TIMEOUT_MS, Database, writer_turn


def test_a_writer_waits_for_the_turn_and_gets_it_once_released(tmp_path: Path) -> None:
    lock = tmp_path / "mailbridge.db.write-lock"
    entered = threading.Event()

    def second_writer() -> None:
        with writer_turn(lock):
            entered.set()

    with writer_turn(lock):
        other = threading.Thread(target=second_writer)
        other.start()
        assert not entered.wait(0.3), "the second writer got in during the first's turn"
    other.join(timeout=10)
    assert entered.is_set()


def test_a_writer_with_a_timeout_gives_up_its_wait_for_the_turn(tmp_path: Path) -> None:
    lock = tmp_path / "mailbridge.db.write-lock"
    with writer_turn(lock), pytest.raises(TimeoutError), writer_turn(lock, timeout=0.05):
        pass  # pragma: no cover - the turn never comes


@contextmanager
def locked_by_another_process(db: Database) -> Iterator[None]:
    """SQLite: BEGIN EXCLUSIVE (writers wait); PostgreSQL: the users table locked."""
    if db.url.get_backend_name() == "sqlite":
        with db.reader() as session:  # our first connection puts the file in WAL mode
            session.execute(text("SELECT 1"))
        conn = sqlite3.connect(str(db.url.database), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.close()
        return
    engine = create_engine(db.url, poolclass=NullPool)
    try:
        with engine.connect() as other, other.begin():
            other.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def test_a_unit_of_work_with_a_timeout_gives_up_and_the_next_waits_as_usual(
    db: Database,
) -> None:
    with (
        locked_by_another_process(db),
        pytest.raises(OperationalError),
        db.transaction(timeout=0.2) as session,
    ):
        session.execute(text("SELECT count(*) FROM users"))
    with db.transaction() as session:  # the same pooled connection, its usual wait again
        if db.url.get_backend_name() == "sqlite":
            assert session.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_TIMEOUT_MS
        else:
            assert session.execute(text("SHOW lock_timeout")).scalar() == "0"
