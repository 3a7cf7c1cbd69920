"""`mailbridge serve`: the SMTP and LMTP listeners, the IMAP bindings and the
web app, one process (and its delivery workers).

The asyncio loop runs the mail listeners and one task per IMAP binding;
the web app runs under waitress (an embedded production WSGI server) in
threads of the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from feed.db import Database
from feed.retention import purge_inbound
from mailbridge.config import Listen, Settings, retention_days
from mailbridge.imap.runner import MailboxService
from mailbridge.limits import throttle_repeated_logs, warn_if_over_budget
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.types import Source
from mailbridge.runtime import make_pipeline
from mailbridge.sessions import Door, GuardedSession
from mailbridge.smtp import (
    DELIVERY_DEADLINE,
    DoorShared,
    InboundHandler,
    MailBridgeLMTP,
    MailBridgeSMTP,
)
from mailbridge.workers import Deliverer, make_deliverer, thread_deliverer

log = logging.getLogger(__name__)

PURGE_INTERVAL = timedelta(days=1)
# Not in the way of start-up, nor of a test that runs `serve` for a moment.
PURGE_FIRST_DELAY = 60.0


@dataclass
class MailServers:
    """The running SMTP and LMTP listeners."""

    servers: list[asyncio.Server]
    shared: DoorShared
    # A deliverer these listeners made for themselves, closed with them.
    own_deliverer: Deliverer | None = None

    @property
    def ports(self) -> list[int]:
        return [s.sockets[0].getsockname()[1] for s in self.servers]

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        await self.shared.close()
        if self.own_deliverer is not None:
            await self.own_deliverer.close()


async def start_mail_servers(
    settings: Settings,
    pipeline: Pipeline,
    *,
    smtp: Listen | None,
    lmtp: Listen | None,
    deliverer: Deliverer | None = None,
    delivery_deadline: float = DELIVERY_DEADLINE,
) -> MailServers:
    """Listen for SMTP and/or LMTP (a port of 0 picks a free one)."""
    loop = asyncio.get_running_loop()
    own = None
    if deliverer is None:
        deliverer = own = thread_deliverer(pipeline)
    servers = []
    shared = DoorShared.for_server(settings, pipeline)
    for listen, source, cls in (
        (smtp, Source.SMTP, MailBridgeSMTP),
        (lmtp, Source.LMTP, MailBridgeLMTP),
    ):
        if listen is None:
            continue
        handler = InboundHandler(
            pipeline, source, deliverer, shared, settings.max_recipients, delivery_deadline
        )
        door = Door.for_listener(settings, source.value.upper())
        factory = _protocol_factory(cls, handler, settings, door)
        servers.append(await loop.create_server(factory, listen.host, listen.port))
        log.info("%s listening on %s (%s)", source.value.upper(), listen, door.gate)
    return MailServers(servers, shared, own)


def _protocol_factory(
    cls: type[GuardedSession], handler: InboundHandler, settings: Settings, door: Door
) -> Callable[[], GuardedSession]:
    def factory() -> GuardedSession:
        return cls(
            handler,
            door=door,
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.mail_domain,
            ident="MailBridge",
        )

    return factory


def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM."""
    throttle_repeated_logs()
    warn_if_over_budget(settings)
    db = Database(settings.database_url)
    pipeline = make_pipeline(settings, db)
    web_thread = _start_web(settings, db)
    try:
        asyncio.run(_serve_mail(settings, pipeline))
    finally:
        if web_thread is not None:
            web_thread.close()
        db.dispose()


async def _serve_mail(settings: Settings, pipeline: Pipeline) -> None:
    deliverer = make_deliverer(settings, pipeline)
    servers = await start_mail_servers(
        settings,
        pipeline,
        smtp=settings.smtp_listen,
        lmtp=settings.lmtp_listen,
        deliverer=deliverer,
    )
    mailboxes = MailboxService(pipeline, deliverer, settings.secret_key)
    await mailboxes.start()
    purges = asyncio.create_task(purge_daily(settings, pipeline))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    purges.cancel()
    await mailboxes.close()
    await servers.close()
    await deliverer.close()


async def purge_daily(
    settings: Settings,
    pipeline: Pipeline,
    interval: timedelta = PURGE_INTERVAL,
    first_delay: float = PURGE_FIRST_DELAY,
) -> None:
    """Expire old refused and ignored raw mail and sweep unreferenced blobs:
    soon after start, then every `interval` (`mailbridge inbound purge` does
    the same on demand). A failure is logged and tried again next time."""
    await asyncio.sleep(first_delay)
    while True:
        try:
            report = await asyncio.to_thread(
                purge_inbound, pipeline.db, pipeline.blobs, retention_days(settings)
            )
            log.info("inbound purge: %s", report)
        except Exception:
            log.exception("the inbound purge failed; trying again in %s", interval)
        await asyncio.sleep(interval.total_seconds())


class WebServer:
    """waitress in a daemon thread."""

    def __init__(self, settings: Settings, db: Database) -> None:
        from mailbridge.httpd import make_web_server
        from web.app import create_app

        self.server = make_web_server(create_app(settings, db), settings)
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self.thread.start()
        log.info("HTTP listening on %s", settings.http_listen)

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def close(self) -> None:
        self.server.close()


def _start_web(settings: Settings, db: Database) -> WebServer | None:
    return WebServer(settings, db)
