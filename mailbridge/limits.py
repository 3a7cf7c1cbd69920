"""Connection limits, after Postfix's anvil and smtpd limits.

How many sessions one listener and one client may hold, which idle session
gives way to a newcomer when a listener is full, how many descriptors the
mail listeners may take (the rest is kept for the web server, the database
and the IMAP door), and how often a failure that repeats is worth a log line.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from mailbridge import replies
from mailbridge.config import Settings
from mailbridge.pipeline.types import Reply

log = logging.getLogger(__name__)

# Descriptors kept from the mail listeners for everything but the web
# server's connections: the database pool (SQLite takes three per
# connection), the worker processes' pipes, IMAP sockets, the search index,
# blobs being written, the log.
DESCRIPTOR_RESERVE = 256
MAIL_LISTENERS = 2
MIN_CONNECTIONS = 10
MAX_DEFAULT_CONNECTIONS = 1000
# Silence this long makes a session the one to give way when its listener is
# full; a client at work is never silent that long between two commands.
EVICTABLE_AFTER = 1.0
# A repeated warning is logged once per interval, with a count of the others.
LOG_INTERVAL = 60.0
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# aiosmtpd's logger: a warning for every unknown or excess command a client sends.
NOISY_LOGGERS = frozenset({"mail.log"})


def descriptor_limit() -> int:
    """The process's soft limit on open descriptors (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def mail_connection_limit(settings: Settings) -> int:
    """Sessions each mail listener may hold: the setting, or what the
    descriptor limit leaves after the reserve and the web server's share."""
    if settings.mail_max_connections:
        return settings.mail_max_connections
    spare = descriptor_limit() - DESCRIPTOR_RESERVE - settings.http_max_connections
    return max(MIN_CONNECTIONS, min(MAX_DEFAULT_CONNECTIONS, spare // MAIL_LISTENERS))


def warn_if_over_budget(settings: Settings) -> None:
    """Say at start-up when the limits together exceed the descriptor limit."""
    wanted = (
        MAIL_LISTENERS * mail_connection_limit(settings)
        + settings.http_max_connections
        + DESCRIPTOR_RESERVE
    )
    if wanted > descriptor_limit():
        log.warning(
            "the connection limits need about %d descriptors but the limit is %d: "
            "raise it (ulimit -n) or lower MAILBRIDGE_MAIL_MAX_CONNECTIONS",
            wanted,
            descriptor_limit(),
        )


def client_key(host: str) -> str:
    """Who a connection counts against: its IPv4 address, or its IPv6 /64
    (one subscriber usually holds a whole /64)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Throttle:
    """Lets a repeated log line through once per `interval` seconds and
    counts the ones it holds back, so that a flood costs a line a minute."""

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def admit(self, key: str) -> int | None:
        """None to hold this one back; else how many were held back before it."""
        now = self.clock()
        if now < self._next.get(key, 0.0):
            self._held[key] += 1
            return None
        self._next[key] = now + self.interval
        return self._held.pop(key, 0)


class RepeatedLogFilter(logging.Filter):
    """A log filter that passes a line a client can make us repeat at will
    once per interval, with a count of the ones held back: running out of
    descriptors (every accept fails), and aiosmtpd's warnings about a
    client's commands."""

    def __init__(
        self, noisy: frozenset[str] = NOISY_LOGGERS, interval: float = LOG_INTERVAL
    ) -> None:
        super().__init__()
        self.noisy = noisy
        self.throttle = Throttle(interval)
        # One record reaches each handler: one verdict for all of them.
        self._last: tuple[logging.LogRecord | None, bool] = (None, True)

    def filter(self, record: logging.LogRecord) -> bool:
        if record is self._last[0]:
            return self._last[1]
        verdict = self._judge(record)
        self._last = (record, verdict)
        return verdict

    def _judge(self, record: logging.LogRecord) -> bool:
        if record.name not in self.noisy and not _is_out_of_descriptors(record):
            return True
        held = self.throttle.admit(f"{record.name}:{record.msg}")
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} ({held} more like it held back)"
        return True


def _is_out_of_descriptors(record: logging.LogRecord) -> bool:
    """The record carries an OSError for want of descriptors (as its
    exception or as an argument)."""
    args = record.args if isinstance(record.args, tuple) else ()
    errors = (record.exc_info[1] if record.exc_info else None, *args)
    return any(isinstance(e, OSError) and e.errno in OUT_OF_DESCRIPTORS for e in errors)


def throttle_repeated_logs() -> None:
    """Put the filter on every handler of the root logger (`mailbridge serve`)."""
    log_filter = RepeatedLogFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(log_filter)


class Session(Protocol):
    """A connection as the gate sees it."""

    @property
    def client(self) -> str: ...

    def idle_since(self) -> float | None:
        """When it last did anything, or None while it is at work."""

    def evict(self, reply: Reply) -> None:
        """Say `reply` and hang up."""


class ConnectionGate:
    """The sessions of one listener: at most `total`, at most `per_client`
    from one client. When the listener is full the session silent the
    longest gives way to the newcomer; if every session is at work the
    newcomer is refused."""

    def __init__(self, name: str, total: int, per_client: int) -> None:
        self.name = name
        self.total = total
        self.per_client = per_client
        self._sessions: set[Session] = set()
        self._per_client: Counter[str] = Counter()
        self._throttle = Throttle()

    def __len__(self) -> int:
        return len(self._sessions)

    def __str__(self) -> str:
        return f"{self.total} connections, {self.per_client} per client"

    def admit(self, session: Session) -> Reply | None:
        """None when `session` may go on; else the reply to refuse it with."""
        if self._per_client[session.client] >= self.per_client:
            self._note("from one client", session.client)
            return replies.TOO_MANY_FROM_CLIENT
        if len(self._sessions) >= self.total and not self._make_room():
            self._note("in all", session.client)
            return replies.TOO_MANY_CONNECTIONS
        self._sessions.add(session)
        self._per_client[session.client] += 1
        return None

    def release(self, session: Session) -> None:
        """`session` is over (idempotent)."""
        if session not in self._sessions:
            return
        self._sessions.remove(session)
        self._per_client[session.client] -= 1
        if self._per_client[session.client] <= 0:
            del self._per_client[session.client]

    def _make_room(self) -> bool:
        cutoff = time.monotonic() - EVICTABLE_AFTER
        idle = ((since, s) for s in self._sessions if (since := s.idle_since()) is not None)
        since, victim = min(idle, key=lambda pair: pair[0], default=(cutoff + 1, None))
        if victim is None or since > cutoff:
            return False
        self.release(victim)
        victim.evict(replies.IDLE_WHILE_FULL)
        return True

    def _note(self, limit: str, client: str) -> None:
        held = self._throttle.admit(limit)
        if held is not None:
            log.warning(
                "%s: connection from %s refused: %d connections %s at most (%d more refused)",
                self.name,
                client,
                self.per_client if limit == "from one client" else self.total,
                limit,
                held,
            )
