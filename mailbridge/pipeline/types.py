"""What enters the pipeline, how a stage ends the trip, and what comes out.

Every door (SMTP, LMTP, IMAP, import) builds the same `RawMessage`. A stage
raises `Reject`, `Hold` or `Ignore` to stop; the orchestrator turns that into
an `Outcome`, which the door maps to its protocol's answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from feed.inbound import InboundStatus


class Source(enum.StrEnum):
    SMTP = "smtp"
    LMTP = "lmtp"
    IMAP = "imap"
    IMPORT = "import"


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope (RFC 5321 §2.3.1), or its equivalent for other doors."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    remote: str = ""


@dataclass(frozen=True)
class MailboxOrigin:
    """Where an IMAP message came from: its binding, folder UIDVALIDITY and UID."""

    binding_id: int
    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class RawMessage:
    data: bytes
    envelope: Envelope
    source: Source
    # Set by the IMAP door: the delivery's transaction moves that mailbox's
    # sync cursor together with the posts (see pipeline.mailbox).
    origin: MailboxOrigin | None = None


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: code, RFC 3463 enhanced status and text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


class StageStop(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Ends the trip through the pipeline with a reason."""

    status: InboundStatus

    def __init__(self, reason: str, reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class Reject(StageStop):
    """The sender's fault: refuse the message (SMTP 5xx), keep it in the log."""

    status = InboundStatus.REJECTED


class Hold(StageStop):
    """Keep the message for a moderator; accept it from the sender's side."""

    status = InboundStatus.HELD


class Ignore(StageStop):
    """Accept and record, never post (bounces, auto-replies, duplicates)."""

    status = InboundStatus.IGNORED


@dataclass(frozen=True)
class Outcome:
    """What became of a message for one group (or one recipient).

    `status` None means a temporary failure: nothing was recorded or posted
    and the sender must retry.
    """

    status: InboundStatus | None
    reason: str
    reply: Reply
    post_id: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status is InboundStatus.ACCEPTED

    @property
    def deferred(self) -> bool:
        return self.status is None
