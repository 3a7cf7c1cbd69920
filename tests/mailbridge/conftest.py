"""Fixtures for tests that talk to real SMTP/LMTP listeners on ephemeral ports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.server import MailServers, start_mail_servers
from mailbridge.smtp import DELIVERY_DEADLINE
from mailbridge.workers import Deliverer
from tests.conftest import Factory


@dataclass(frozen=True)
class Served:
    smtp_port: int
    lmtp_port: int


@contextmanager
def serving(
    settings: Settings,
    pipeline: Pipeline,
    deliverer: Deliverer | None = None,
    delivery_deadline: float = DELIVERY_DEADLINE,
) -> Iterator[Served]:
    """The real SMTP and LMTP listeners, in an event loop on a background
    thread (with `deliverer`, closed with them, when one is given)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started: Future[MailServers] = asyncio.run_coroutine_threadsafe(
        start_mail_servers(
            settings,
            pipeline,
            smtp=settings.smtp_listen,
            lmtp=settings.lmtp_listen,
            deliverer=deliverer,
            delivery_deadline=delivery_deadline,
        ),
        loop,
    )
    servers = started.result(timeout=10)
    smtp_port, lmtp_port = servers.ports
    try:
        yield Served(smtp_port, lmtp_port)
    finally:
        asyncio.run_coroutine_threadsafe(servers.close(), loop).result(timeout=30)
        if deliverer is not None:
            asyncio.run_coroutine_threadsafe(deliverer.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def served(settings: Settings, pipeline: Pipeline) -> Iterator[Served]:
    """The real SMTP and LMTP listeners of `settings`."""
    with serving(settings, pipeline) as served:
        yield served


@pytest.fixture
def eng(make: Factory) -> Factory:
    """Alice and Bob, members of group eng, bound to eng@company.example."""
    make.user("alice@company.example", "Alice Martin")
    make.user("bob@company.example", "Bob Stone")
    make.group("eng")
    make.member("eng", "alice@company.example")
    make.member("eng", "bob@company.example")
    make.binding("eng@company.example", "eng")
    return make
