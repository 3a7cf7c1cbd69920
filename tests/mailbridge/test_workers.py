"""Deliveries in worker processes: the same answers, and a dead worker loses nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import signal
import smtplib
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from feed.db import Database
from feed.posts import Post
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.server import start_mail_servers
from mailbridge.spool import IN_MEMORY_LIMIT
from mailbridge.workers import process_deliverer
from tests.conftest import Factory
from tests.mailbridge.test_smtp import make_mail


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Room for a message larger than the spool's in-memory limit."""
    return dataclasses.replace(settings, max_message_size=4 * IN_MEMORY_LIMIT)


@pytest.fixture
def smtp_port_with_workers(settings: Settings, pipeline: Pipeline, make: Factory) -> Iterator[int]:
    make.user("alice@company.example", "Alice Martin")
    make.group("eng")
    make.member("eng", "alice@company.example")
    make.binding("eng@company.example", "eng")
    deliverer = process_deliverer(settings, processes=1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers = asyncio.run_coroutine_threadsafe(
        start_mail_servers(
            settings, pipeline, smtp=settings.smtp_listen, lmtp=None, deliverer=deliverer
        ),
        loop,
    ).result(timeout=10)
    try:
        yield servers.ports[0]
    finally:
        asyncio.run_coroutine_threadsafe(servers.close(), loop).result(timeout=10)
        asyncio.run_coroutine_threadsafe(deliverer.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def posts(db: Database) -> int:
    with db.reader() as session:
        return session.scalar(select(func.count()).select_from(Post)) or 0


def test_a_worker_process_delivers_and_answers_after_commit(
    smtp_port_with_workers: int, db: Database
) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port_with_workers, timeout=60) as client:
        assert client.send_message(make_mail()) == {}
    assert posts(db) == 1


def test_a_large_message_reaches_the_worker_through_the_spool(
    smtp_port_with_workers: int, db: Database, settings: Settings
) -> None:
    mail = make_mail()
    mail.add_attachment(os.urandom(2 * IN_MEMORY_LIMIT), "application", "octet-stream")
    with smtplib.SMTP("127.0.0.1", smtp_port_with_workers, timeout=60) as client:
        assert client.send_message(mail) == {}
    assert posts(db) == 1
    assert list(settings.spool_dir.iterdir()) == []  # removed once answered


def test_a_killed_worker_is_a_451_and_the_retry_is_delivered(
    smtp_port_with_workers: int, db: Database
) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port_with_workers, timeout=60) as client:
        assert client.send_message(make_mail(message_id="<warm@company.example>")) == {}
    workers = multiprocessing.active_children()
    assert workers, "the pool has a live worker"
    for worker in workers:
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
    time.sleep(0.2)
    with (
        smtplib.SMTP("127.0.0.1", smtp_port_with_workers, timeout=60) as client,
        pytest.raises(smtplib.SMTPDataError) as caught,
    ):
        client.send_message(make_mail())
    assert caught.value.smtp_code == 451
    with smtplib.SMTP("127.0.0.1", smtp_port_with_workers, timeout=60) as client:
        assert client.send_message(make_mail()) == {}
    assert posts(db) == 2
