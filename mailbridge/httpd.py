"""The embedded web server: waitress, with limits that hold under hostile clients.

waitress stops accepting at its connection limit, so a crowd of requests
left half-sent used to keep `/healthz` and everyone else waiting for
minutes. Here, when the server is full, the connection silent the longest
(no request being served on it) gives way to the newcomer, idle connections
are dropped sooner, and a failing accept (out of descriptors) pauses
accepting for a moment and is logged once per interval instead of on every
turn of the loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from waitress.server import TcpWSGIServer

from mailbridge.config import Settings
from mailbridge.limits import EVICTABLE_AFTER, OUT_OF_DESCRIPTORS, Throttle

log = logging.getLogger(__name__)

THREADS = 8
# Seconds a connection may stay silent with no request in progress
# (waitress: 120), and how often that is looked at (waitress: 30).
CHANNEL_TIMEOUT = 60
CLEANUP_INTERVAL = 10
# After an accept fails for want of descriptors, as asyncio does.
ACCEPT_PAUSE = 1.0


class GuardedWSGIServer(TcpWSGIServer):  # type: ignore[misc]  # waitress is untyped
    """waitress's TCP server that makes room for newcomers when full."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._accept_paused_until = 0.0
        self._next_cleanup = 0.0
        self._throttle = Throttle()
        super().__init__(*args, **kwargs)

    def readable(self) -> bool:
        """Whether to accept: waitress's version, less its log line at each
        crossing of the limit (a client could make it flap), plus eviction."""
        now = time.time()
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)  # closes the channels silent too long
        if not self.accepting or time.monotonic() < self._accept_paused_until:
            return False
        if len(self._map) < self.adj.connection_limit or self._longest_idle() is not None:
            return True
        held = self._throttle.admit("full")
        if held is not None:
            log.warning("HTTP full (%d connections, none idle): accepting paused", len(self._map))
        return False

    def handle_accept(self) -> None:
        if len(self._map) >= self.adj.connection_limit:
            victim = self._longest_idle()
            if victim is None:
                return
            victim.handle_close()
        try:
            pair = self.accept()
        except OSError as error:
            self._accept_failed(error)
            return
        if pair is None:
            return
        conn, addr = pair
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()  # the client left before we got to it
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def _longest_idle(self) -> Any | None:
        """The channel silent the longest with no request being served."""
        cutoff = time.time() - EVICTABLE_AFTER
        idle = [c for c in self.active_channels.values() if not c.requests]
        victim = min(idle, key=lambda c: c.last_activity, default=None)
        return victim if victim is not None and victim.last_activity <= cutoff else None

    def _accept_failed(self, error: OSError) -> None:
        if error.errno in OUT_OF_DESCRIPTORS:
            self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
        held = self._throttle.admit(str(error.errno))
        if held is not None:
            log.warning("HTTP accept failed: %s (%d more like it held back)", error, held)


def make_web_server(app: Any, settings: Settings) -> GuardedWSGIServer:
    """waitress on the configured address, with our limits."""
    return GuardedWSGIServer(
        app,
        host=settings.http_listen.host,
        port=settings.http_listen.port,
        threads=THREADS,
        connection_limit=settings.http_max_connections,
        channel_timeout=CHANNEL_TIMEOUT,
        cleanup_interval=CLEANUP_INTERVAL,
        # select() cannot watch a descriptor numbered 1024 or more.
        asyncore_use_poll=True,
    )
