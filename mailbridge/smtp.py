"""SMTP and LMTP listeners on aiosmtpd: thin doors into the pipeline.

The protocol handlers only translate: RCPT is checked against bindings
(550 5.1.1 unknown, 550 5.7.1 relaying denied: never an open relay), DATA
is read into the spool (lines of any length, up to the size limit) and goes
to the `Deliverer` (batched, in worker processes), and the reply is sent
only once that returns, that is after the commit.

Whatever happens after DATA (refused for its size, over the budget of bytes
in flight, an internal error, no answer in time), LMTP answers once per
accepted recipient (RFC 2033 §4.2), so a client never loses count. Our own
failures are `451 4.3.0` with a plain reason, never the text of an
exception.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from mailbridge import replies
from mailbridge.budget import InFlightBudget, size_hint
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import DeliveryReport, Pipeline
from mailbridge.pipeline.refusals import RefusalTally, rows_for_refusal
from mailbridge.pipeline.route import normalize_recipient
from mailbridge.pipeline.types import Envelope as MailEnvelope
from mailbridge.pipeline.types import RawMessage, Reply, Source
from mailbridge.recipients import AcceptedRecipients, RecipientChecks, RefusalRecorder
from mailbridge.sessions import GuardedSession
from mailbridge.smtpdata import DataVerdict, receive_data
from mailbridge.spool import Spool, SpoolWriter, release_delivery
from mailbridge.workers import Deliverer

log = logging.getLogger(__name__)

# How long a delivery may take before the client is told to retry: half of
# the ten minutes a client waits after its final dot (RFC 5321 §4.5.3.2.6).
DELIVERY_DEADLINE = 300.0
# The most of one line held at once; a longer DATA line arrives in pieces.
READ_LIMIT = 32 * 1024

# aiosmtpd's own answers that carry no enhanced status code.
AIOSMTPD_TOO_BIG = b"552 Error: message size exceeds"
AIOSMTPD_LINE_TOO_LONG = b"500 Command line too long"


@dataclass
class DoorShared:
    """What the SMTP and LMTP doors of one server share."""

    budget: InFlightBudget
    spool: Spool
    checks: RecipientChecks
    refusals: RefusalRecorder

    @classmethod
    def for_server(cls, settings: Settings, pipeline: Pipeline) -> DoorShared:
        def record(raw: RawMessage, reason: str, wait: float) -> None:
            pipeline.record_refusal(raw, reason, wait=wait)

        spool = Spool(settings.spool_dir)
        spool.remove_leftovers()
        return cls(
            InFlightBudget(settings.max_bytes_in_flight),
            spool,
            RecipientChecks(pipeline.check_recipient),
            RefusalRecorder(record),
        )

    async def close(self) -> None:
        self.checks.close()
        await self.refusals.close()


class InboundHandler:
    """aiosmtpd handler: MAIL and RCPT checks, and the answer to DATA, for one door."""

    def __init__(
        self,
        pipeline: Pipeline,
        source: Source,
        deliverer: Deliverer,
        shared: DoorShared,
        max_recipients: int = 50,
        delivery_deadline: float = DELIVERY_DEADLINE,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.deliverer = deliverer
        self.shared = shared
        self.max_recipients = max_recipients
        self.delivery_deadline = delivery_deadline
        self.accepted = AcceptedRecipients()

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.shared.budget.has_room(size_hint(options)):
            return str(replies.NO_ROOM_NOW)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return str(replies.OK_SENDER)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return str(replies.TOO_MANY_RECIPIENTS)
        if not self.shared.budget.has_room():
            return str(replies.NO_ROOM_NOW)
        if normalize_recipient(address) in self.accepted:
            envelope.rcpt_tos.append(address)
            return str(replies.OK_RECIPIENT)
        check = await self.shared.checks.run(address)
        if check is None:
            return str(replies.TEMPORARY_FAILURE)
        if check.ok:
            self.accepted.add(check.address)
            envelope.rcpt_tos.append(address)
            return str(check.reply)
        raw = self._raw(session, envelope, (address,))
        tally = session.refusals if isinstance(session, MailBridgeSession) else None
        for row in rows_for_refusal(tally, raw, check.address, str(check.reply)):
            self.shared.refusals.record(*row)
        return str(check.reply)

    async def handle_exception(self, error: Exception) -> str:
        """Any exception in a hook: ours, so a temporary failure in plain words."""
        log.error("SMTP session error", exc_info=error)
        return str(replies.TEMPORARY_FAILURE)

    async def answer_data(
        self, session: Session, envelope: Envelope, verdict: DataVerdict, message: SpoolWriter
    ) -> str:
        """The answer to a DATA read to its end: delivered, or why not."""
        if verdict is DataVerdict.TOO_BIG:
            message.discard()
            self.record_oversize(session, envelope)
            return self.to_all(envelope, replies.TOO_BIG)
        if verdict is DataVerdict.NO_ROOM:
            message.discard()
            log.warning("a message from %s was refused: %s", envelope.mail_from, verdict.value)
            return self.to_all(envelope, replies.NO_ROOM_FOR_DATA)
        item = message.finish(self._mail_envelope(session, envelope), self.source)
        try:
            async with asyncio.timeout(self.delivery_deadline):
                report = await self.deliverer.deliver(item)
        except TimeoutError:
            log.error("no delivery within %.0f s; the client will retry", self.delivery_deadline)
            return self.to_all(envelope, replies.TEMPORARY_FAILURE)
        except Exception:
            log.exception("delivery failed before any group was reached")
            return self.to_all(envelope, replies.TEMPORARY_FAILURE)
        finally:
            release_delivery(item)
        return self._answer(envelope, report)

    def record_oversize(self, session: Session, envelope: Envelope) -> None:
        raw = self._raw(session, envelope, tuple(envelope.rcpt_tos))
        self.shared.refusals.record(raw, f"message larger than the limit: {replies.TOO_BIG}")

    def to_all(self, envelope: Envelope, reply: Reply) -> str:
        """`reply` as the answer after DATA: once, or once per recipient in LMTP."""
        if self.source is not Source.LMTP or not envelope.rcpt_tos:
            return str(reply)
        return "\r\n".join(str(reply) for _ in envelope.rcpt_tos)

    def record_cut(self, session: Session, envelope: Envelope, reason: str) -> None:
        """Log a session a limit cut off in the middle of its message."""
        raw = self._raw(session, envelope, tuple(envelope.rcpt_tos))
        self.pipeline.record_refusal(raw, reason)

    def _answer(self, envelope: Envelope, report: DeliveryReport) -> str:
        if self.source is not Source.LMTP:
            return str(report.combined_reply())
        lines = []
        for address in envelope.rcpt_tos:
            outcome = report.outcomes.get(normalize_recipient(address))
            lines.append(str(outcome.reply if outcome else replies.UNKNOWN_RECIPIENT))
        return "\r\n".join(lines)

    def _raw(self, session: Session, envelope: Envelope, rcpts: tuple[str, ...]) -> RawMessage:
        return RawMessage(b"", self._mail_envelope(session, envelope, rcpts), self.source)

    def _mail_envelope(
        self, session: Session, envelope: Envelope, rcpts: tuple[str, ...] | None = None
    ) -> MailEnvelope:
        peer = session.peer
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        recipients = tuple(envelope.rcpt_tos) if rcpts is None else rcpts
        return MailEnvelope(envelope.mail_from or "", recipients, remote)


class MailBridgeSession(Session):
    """aiosmtpd's session, with the count of its refused RCPTs."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.refusals = RefusalTally()


class MailBridgeSMTP(GuardedSession):
    """aiosmtpd's SMTP with the limits of its door (sessions.py), our DATA
    reader, enhanced status codes, and sessions that count their refused
    RCPTs (one summary row when they end: see pipeline.refusals)."""

    line_length_limit = READ_LIMIT

    def _create_session(self) -> Session:
        return MailBridgeSession(self.loop)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        handler, session = self.event_handler, self.session
        if isinstance(handler, InboundHandler) and isinstance(session, MailBridgeSession):
            summary = session.refusals.take_summary()
            if summary is not None:
                handler.shared.refusals.record(*summary)

    async def push(self, status: str | bytes) -> None:
        encoded = status.encode("utf-8", "replace") if isinstance(status, str) else status
        if encoded.startswith(AIOSMTPD_LINE_TOO_LONG):
            encoded = str(replies.LINE_TOO_LONG).encode()
        elif encoded.startswith(AIOSMTPD_TOO_BIG):  # a SIZE= at MAIL over the limit
            if self.session is not None and self.envelope is not None:
                self._handler().record_oversize(self.session, self.envelope)
            encoded = str(replies.TOO_BIG).encode()
        await super().push(encoded)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command name
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        assert self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        answer = await self._receive_and_answer(self._handler(), self.session, self.envelope)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(answer)

    async def _receive_and_answer(
        self, handler: InboundHandler, session: Session, envelope: Envelope
    ) -> str:
        message = handler.shared.spool.writer()
        claim = handler.shared.budget.claim()
        try:
            verdict = await receive_data(self._reader, message, self.data_size_limit, claim)
            # Received: the DATA rate no longer applies, the delivery is at work.
            with self.working_on("DATA"):
                return await handler.answer_data(session, envelope, verdict, message)
        except (asyncio.CancelledError, ConnectionError):
            message.discard()
            raise
        except Exception:
            message.discard()
            log.exception("receiving a message from %s failed", envelope.mail_from)
            return handler.to_all(envelope, replies.TEMPORARY_FAILURE)
        finally:
            claim.release()

    def _handler(self) -> InboundHandler:
        handler = self.event_handler
        assert isinstance(handler, InboundHandler)
        return handler


class MailBridgeLMTP(MailBridgeSMTP, LMTP):
    pass
