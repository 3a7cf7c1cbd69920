"""Engine, sessions and the `transaction()` context manager.

SQLite (the embedded default) runs in WAL mode with foreign keys on; write
transactions start with BEGIN IMMEDIATE so that concurrent writers queue on
the busy timeout instead of failing on a lock upgrade. PostgreSQL needs none
of this.

A unit of work may be given a `timeout`: how long it may wait for a lock
held by someone else (SQLite's busy timeout; PostgreSQL's lock_timeout, and
a statement_timeout of twice that). Work done while a client waits for an
answer (an RCPT check) must give up long before the client does.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "mailbridge_write"
BUSY_TIMEOUT_OPTION = "mailbridge_busy_timeout_ms"
# How often a writer with a timeout looks again for its turn (see writer_turn).
TURN_POLL_SECONDS = 0.01


class Database:
    """One engine and its session factories; pass it explicitly."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.engine = _make_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(**{WRITE_OPTION: True})
        self._writers = sessionmaker(writer, expire_on_commit=False)
        self._write_lock = _write_lock_path(self.url)

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back on error.

        With a `timeout`, waiting longer than that for a lock raises
        (`TimeoutError` for our own writers' turn, the driver's
        OperationalError for the database's locks)."""
        with (
            writer_turn(self._write_lock, timeout),
            self._writers() as session,
            session.begin(),
        ):
            self._limit_waits(session, timeout)
            yield session

    @contextmanager
    def reader(self, timeout: float | None = None) -> Iterator[Session]:
        """A read-only unit of work (never committed), waiting at most
        `timeout` seconds for a lock when one is given."""
        with self._sessions() as session:
            self._limit_waits(session, timeout)
            yield session
            session.rollback()

    def _limit_waits(self, session: Session, timeout: float | None) -> None:
        if timeout is None:
            return
        ms = max(1, int(timeout * 1000))
        if self.url.get_backend_name() == "sqlite":
            # Applied by on_begin, before BEGIN, which is where a writer waits.
            session.connection(execution_options={BUSY_TIMEOUT_OPTION: ms})
        else:
            # SET LOCAL: undone by the transaction's end, whatever it is.
            session.execute(text(f"SET LOCAL lock_timeout = {ms}"))
            session.execute(text(f"SET LOCAL statement_timeout = {2 * ms}"))

    def dispose(self) -> None:
        self.engine.dispose()


def _write_lock_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(f"{url.database}.write-lock")


@contextmanager
def writer_turn(lock_path: Path | None, timeout: float | None = None) -> Iterator[None]:
    """Take turns to write a SQLite file, waking the moment the turn is free.

    SQLite serialises writers itself, but a writer that finds the file
    locked sleeps in its busy handler (1, 2, 5, ... up to 100 ms) and wakes
    late; `flock` hands the turn over at once. Each turn opens the lock file
    anew: flock excludes open file descriptions, so threads of one process
    exclude each other too. Other programs (the CLI, sqlite3) still meet
    SQLite's own lock and busy timeout. With a `timeout`, the turn is
    awaited by polling and TimeoutError raised when it does not come.
    """
    if lock_path is None:
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _take_turn(fd, timeout)
        yield
    finally:
        os.close(fd)  # releases the lock


def _take_turn(fd: int, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError("no turn to write to the database in time") from None
            time.sleep(TURN_POLL_SECONDS)


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite file (the data folder on a fresh install)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


def _make_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)
    ensure_sqlite_folder(url)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to issue.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: a 250 promises the message survives a power cut too; in WAL
        # mode NORMAL could lose the last commits.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        _set_busy_timeout(conn, options.get(BUSY_TIMEOUT_OPTION, SQLITE_BUSY_TIMEOUT_MS))
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION, False) else "BEGIN")


def _set_busy_timeout(conn: Any, ms: int) -> None:
    """Set the connection's busy timeout when it differs from the last one set
    (kept with the pooled DBAPI connection, so the usual case costs nothing)."""
    info = conn.connection.info
    if info.get(BUSY_TIMEOUT_OPTION, SQLITE_BUSY_TIMEOUT_MS) != ms:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={int(ms)}")
        info[BUSY_TIMEOUT_OPTION] = ms
