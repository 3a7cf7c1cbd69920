"""Limits on one SMTP or LMTP session, around aiosmtpd's protocol.

- At connect the listener's `ConnectionGate` admits the session or it gets
  `421 4.7.0` and is closed at once (limits.py).
- A session ends at its deadline, whatever it sends (NOOP and RSET do not
  extend it; Exchange's ConnectionTimeout is the model): `421 4.4.2`. A
  command at work (a delivery) finishes and is answered first.
- A DATA must keep an average rate once its grace period is over, so a
  message dripped a byte at a time is cut long before aiosmtpd's 300 s idle
  timeout would notice: `421 4.4.2`, recorded in the inbound log.
- A session that draws `max_errors` 4xx/5xx replies without delivering mail
  gets `421 4.7.0` and is closed (Postfix's smtpd_hard_error_limit).

aiosmtpd's own idle timeout between two commands (300 s) stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbridge import replies
from mailbridge.config import Settings
from mailbridge.limits import ConnectionGate, client_key, mail_connection_limit
from mailbridge.pipeline.types import Reply

log = logging.getLogger(__name__)

# Replies that are no fault of the client's: our own farewell, and a
# recipient past the limit (RFC 5321 §4.5.3.1.10: the client sends the rest
# in another transaction; Postfix does not count it either).
NOT_ERRORS = ("421 ", str(replies.TOO_MANY_RECIPIENTS))
# A client that does not read our last words loses its connection anyway.
LINGER_SECONDS = 10.0
# The DATA rate is checked at most this often.
RATE_CHECK_SECONDS = 1.0
# A cut session is answered after its refusal is recorded, or after this long.
RECORD_SECONDS = 10.0


@dataclass(frozen=True)
class SessionLimits:
    session_seconds: float
    data_min_rate: int  # bytes per second; 0: no rate rule
    data_grace_seconds: float
    max_errors: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        return cls(
            session_seconds=settings.mail_session_seconds,
            data_min_rate=settings.mail_data_min_rate,
            data_grace_seconds=settings.mail_data_grace_seconds,
            max_errors=settings.mail_max_errors,
        )


class CutRecorder(Protocol):
    """Records a message cut off by a limit before it was complete."""

    def record_cut(self, session: Session, envelope: Envelope, reason: str) -> None: ...


@dataclass
class Door:
    """What the sessions of one listener share."""

    gate: ConnectionGate
    limits: SessionLimits
    # Inbound-log writes of cut sessions still under way (asyncio keeps
    # only weak references to tasks).
    recording: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def for_listener(cls, settings: Settings, name: str) -> Door:
        per_client = settings.mail_max_connections_per_client
        gate = ConnectionGate(name, mail_connection_limit(settings), per_client)
        return cls(gate, SessionLimits.from_settings(settings))


class GuardedSession(SMTP):
    """aiosmtpd's SMTP protocol with the limits of its `Door`."""

    def __init__(self, handler: Any, *, door: Door, **kwargs: Any) -> None:
        self.door = door
        self.client = ""
        self._admitted = False
        self._received = 0
        self._last_seen = time.monotonic()
        self._busy = 0
        self._answering: str | None = None
        self._errors = 0
        self._expired = False
        self._data_started: float | None = None
        self._data_offset = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._rate_check: asyncio.TimerHandle | None = None
        super().__init__(handler, **kwargs)

    # The connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client = client_key(str(peer[0]) if isinstance(peer, tuple) else str(peer))
        refusal = self.door.gate.admit(self)
        if refusal is not None:
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(f"{refusal}\r\n".encode("ascii"))
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.door.limits.session_seconds, self._expire)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return  # refused at the door: aiosmtpd never started
        self.door.gate.release(self)
        self._stop_data_clock()
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return super().eof_received() if self._admitted else False

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._received += len(data)
            self._last_seen = time.monotonic()
            super().data_received(data)

    # What the gate asks

    def idle_since(self) -> float | None:
        if self._busy or self._data_started is not None:
            return None
        return self._last_seen

    def evict(self, reply: Reply) -> None:
        self._hang_up(reply)

    # Commands and replies

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        with self.working_on(command):
            return await super()._call_handler_hook(command, *args)

    @contextlib.contextmanager
    def working_on(self, command: str) -> Iterator[None]:
        """A command at work: the session is not idle, its deadline waits
        for the answer, and the answer counts as that command's."""
        self._stop_data_clock()
        self._busy += 1
        self._answering = command
        try:
            yield
        finally:
            self._busy -= 1

    async def push(self, status: str | bytes) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
        self._last_seen = time.monotonic()
        if text.startswith("354"):
            self._start_data_clock()
        else:
            self._stop_data_clock()
        if isinstance(status, str):  # two calls: aiosmtpd's push takes an AnyStr
            await super().push(status)
        else:
            await super().push(status)
        self._count_errors(text)
        if self._expired:
            self._hang_up(replies.SESSION_EXPIRED)
        elif self._errors >= self.door.limits.max_errors:
            self._hang_up(replies.TOO_MANY_ERRORS)

    def _count_errors(self, text: str) -> None:
        """Count 4xx/5xx replies; mail delivered (a 2xx to DATA, for any
        LMTP recipient) starts the count again, as in Postfix."""
        codes = {line[:1] for line in text.split("\r\n")}
        if self._answering == "DATA" and "2" in codes:
            self._errors = 0
        elif text[:1] in {"4", "5"} and not text.startswith(NOT_ERRORS):
            self._errors += 1
        self._answering = None

    # Deadlines

    def _expire(self) -> None:
        self._expired = True
        if self._busy:
            return  # the command at work is answered first (see push)
        if self._data_started is None:
            self._hang_up(replies.SESSION_EXPIRED)
            return
        elapsed = time.monotonic() - self._data_started
        received = self._received - self._data_offset
        self._cut(
            replies.SESSION_EXPIRED,
            f"DATA cut at the session deadline, after {elapsed:.0f} s and {received} bytes",
        )

    def _start_data_clock(self) -> None:
        self._data_started = time.monotonic()
        self._data_offset = self._received
        limits = self.door.limits
        if limits.data_min_rate:
            self._rate_check = self.loop.call_later(limits.data_grace_seconds, self._check_rate)

    def _stop_data_clock(self) -> None:
        self._data_started = None
        if self._rate_check is not None:
            self._rate_check.cancel()
            self._rate_check = None

    def _check_rate(self) -> None:
        """The DATA so far must average `data_min_rate`: the bytes received
        pay for that many seconds; past them, the session is cut."""
        if self._data_started is None:
            return
        elapsed = time.monotonic() - self._data_started
        received = self._received - self._data_offset
        paid_for = received / self.door.limits.data_min_rate
        if paid_for >= elapsed:
            delay = max(paid_for - elapsed, RATE_CHECK_SECONDS)
            self._rate_check = self.loop.call_later(delay, self._check_rate)
            return
        self._cut(
            replies.DATA_TOO_SLOW,
            f"DATA cut after {elapsed:.0f} s and {received} bytes, slower than "
            f"{self.door.limits.data_min_rate} bytes/s",
        )

    def _cut(self, reply: Reply, reason: str) -> None:
        """End a session in the middle of its DATA: recorded, then `reply`."""
        self._stop_data_clock()
        task = self.loop.create_task(self._record_then_hang_up(reply, f"{reason}: {reply}"))
        self.door.recording.add(task)
        task.add_done_callback(self.door.recording.discard)

    async def _record_then_hang_up(self, reply: Reply, reason: str) -> None:
        """When the client reads the 421, the refusal is on record."""
        handler, session, envelope = self.event_handler, self.session, self.envelope
        try:
            if hasattr(handler, "record_cut") and session and envelope:
                recorder: CutRecorder = handler
                work = asyncio.to_thread(recorder.record_cut, session, envelope, reason)
                await asyncio.wait_for(work, RECORD_SECONDS)
        except Exception:
            log.exception("could not record a cut session in the inbound log")
        finally:
            self._hang_up(reply)

    def _hang_up(self, reply: Reply) -> None:
        """Say `reply` (RFC 5321 §3.8: 421 and close) and close the connection."""
        transport = self.transport
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            return
        log.debug("%s: %s", self.client, reply)
        self.door.gate.release(self)
        transport.write(f"{reply}\r\n".encode("ascii"))
        transport.close()
        self.loop.call_later(LINGER_SECONDS, transport.abort)
