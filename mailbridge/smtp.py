"""SMTP and LMTP listeners on aiosmtpd: thin doors into the pipeline.

The protocol handlers only translate: RCPT is checked against bindings
(550 5.1.1 unknown, 550 5.7.1 relaying denied: never an open relay), DATA
goes to the `Deliverer` (batched, in worker processes), and the reply is
sent only once that returns, that is after the commit. LMTP answers once per
recipient after DATA (RFC 2033 §4.2).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbridge import replies
from mailbridge.pipeline.deliver import DeliveryReport, Pipeline
from mailbridge.pipeline.route import normalize_recipient
from mailbridge.pipeline.types import Envelope as MailEnvelope
from mailbridge.pipeline.types import RawMessage, Source
from mailbridge.sessions import GuardedSession
from mailbridge.workers import Deliverer

log = logging.getLogger(__name__)

# aiosmtpd's own answers to oversize mail carry no enhanced status code.
AIOSMTPD_TOO_BIG = (b"552 Error: Too much mail data", b"552 Error: message size exceeds")


class AcceptedRecipients:
    """Bound addresses recently accepted at RCPT, so that a busy door does
    not ask the database for the same few addresses on every message.

    Only acceptances are kept, for `ttl` seconds: a new binding works at
    once, and a removed one is refused again after at most `ttl` (meanwhile
    the delivery's own routing, which always reads the database, refuses the
    message and records why).
    """

    def __init__(self, ttl: float = 10.0, capacity: int = 10_000) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._until: dict[str, float] = {}

    def __contains__(self, address: str) -> bool:
        until = self._until.get(address)
        return until is not None and until > time.monotonic()

    def add(self, address: str) -> None:
        if len(self._until) >= self.capacity:
            self._until.clear()
        self._until[address] = time.monotonic() + self.ttl


class InboundHandler:
    """aiosmtpd handler: RCPT checks and DATA delivery for one door."""

    def __init__(
        self,
        pipeline: Pipeline,
        source: Source,
        deliverer: Deliverer,
        max_recipients: int = 50,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.max_recipients = max_recipients
        self.deliverer = deliverer
        self.accepted = AcceptedRecipients()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return str(replies.TOO_MANY_RECIPIENTS)
        if normalize_recipient(address) in self.accepted:
            envelope.rcpt_tos.append(address)
            return str(replies.OK_RECIPIENT)
        check = await asyncio.to_thread(self.pipeline.check_recipient, address)
        if check.ok:
            self.accepted.add(check.address)
            envelope.rcpt_tos.append(address)
            return str(check.reply)
        raw = self._raw(session, envelope, b"", (address,))
        await asyncio.to_thread(
            self.pipeline.record_refusal, raw, f"RCPT {check.address}: {check.reply}"
        )
        return str(check.reply)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        raw = self._raw(session, envelope, data, tuple(envelope.rcpt_tos))
        try:
            report = await self.deliverer.deliver(raw)
        except Exception:
            log.exception("delivery failed before any group was reached")
            return self._all(envelope, str(replies.TEMPORARY_FAILURE))
        return self._answer(envelope, report)

    def record_oversize(self, session: Session, envelope: Envelope) -> None:
        raw = self._raw(session, envelope, b"", tuple(envelope.rcpt_tos))
        self.pipeline.record_refusal(raw, f"message larger than the limit: {replies.TOO_BIG}")

    def record_cut(self, session: Session, envelope: Envelope, reason: str) -> None:
        """Log a session a limit cut off in the middle of its message."""
        raw = self._raw(session, envelope, b"", tuple(envelope.rcpt_tos))
        self.pipeline.record_refusal(raw, reason)

    def _answer(self, envelope: Envelope, report: DeliveryReport) -> str:
        if self.source is not Source.LMTP:
            return str(report.combined_reply())
        lines = []
        for address in envelope.rcpt_tos:
            outcome = report.outcomes.get(normalize_recipient(address))
            lines.append(str(outcome.reply if outcome else replies.UNKNOWN_RECIPIENT))
        return "\r\n".join(lines)

    def _all(self, envelope: Envelope, reply: str) -> str:
        if self.source is not Source.LMTP:
            return reply
        return "\r\n".join(reply for _ in envelope.rcpt_tos)

    def _raw(
        self, session: Session, envelope: Envelope, data: bytes, rcpts: tuple[str, ...]
    ) -> RawMessage:
        peer = session.peer
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        mail_from = envelope.mail_from or ""
        return RawMessage(data, MailEnvelope(mail_from, rcpts, remote), self.source)


class _OversizeMixin:
    """Rewrites aiosmtpd's bare 552 into 552 5.3.4 and records the refusal."""

    event_handler: Any
    session: Session | None
    envelope: Envelope | None

    async def push(self, status: str | bytes) -> None:
        encoded = status.encode("ascii", "replace") if isinstance(status, str) else status
        handler = self.event_handler
        if encoded.startswith(AIOSMTPD_TOO_BIG) and isinstance(handler, InboundHandler):
            status = await self._refuse_oversize(handler)
        await super().push(status)  # type: ignore[misc]

    async def _refuse_oversize(self, handler: InboundHandler) -> str:
        if self.session is not None and self.envelope is not None:
            await asyncio.to_thread(handler.record_oversize, self.session, self.envelope)
        rcpts = self.envelope.rcpt_tos if self.envelope is not None else []
        if handler.source is Source.LMTP and rcpts:
            # RFC 2033 §4.2: one reply per recipient after DATA.
            return "\r\n".join(str(replies.TOO_BIG) for _ in rcpts)
        return str(replies.TOO_BIG)


class MailBridgeSMTP(_OversizeMixin, GuardedSession):
    pass


class MailBridgeLMTP(_OversizeMixin, GuardedSession, LMTP):
    pass
