"""What the classify stage can say of a message, and helpers its detectors share."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailbridge.message import ParsedMessage


class MailKind(enum.Enum):
    """What an inbound message is; only PERSON is ever posted."""

    PERSON = "person"
    BOUNCE = "bounce"  # a delivery failure or delay: feeds bounce processing
    AUTO_REPLY = "auto-reply"  # vacation replies, autoresponders, list robots
    LOOP = "loop"  # our own outbound mail come back to us
    # Read receipts (RFC 8098, formerly 3798), abuse complaints (RFC 5965) and
    # success DSNs are machine mail but say nothing about a failed delivery.
    # Kept apart from BOUNCE so that bounce processing, which may disable a
    # member after repeated failures, never counts them.
    REPORT = "report"


@dataclass(frozen=True)
class Classification:
    """The verdict, with a reason fit to show to an admin."""

    kind: MailKind
    reason: str
    failed_addresses: tuple[str, ...] = ()  # lower-case; see `permanent`
    # True: the listed addresses failed for good (5.x.x); False: delayed or a
    # transient cause (4.x.x).  With a mix, the permanent ones are listed.
    permanent: bool | None = None


PERSON = Classification(MailKind.PERSON, "person: no sign of machine mail")


def collapsed_subject(message: ParsedMessage) -> str:
    """The subject with folding and runs of white space collapsed."""
    return " ".join(message.subject.split())
