"""Classify stage: tell mail a person wrote for the group from machine mail.

Machine mail (bounces, auto-replies, read receipts, complaints, our own posts
coming back) is recorded as ignored and never posted.  The checks run from the
most certain to the least: our loop stamp, then the MIME report types
(RFC 6522), then who sent the message and how, and only last its subject.
A person's post that we throw away is lost silently, so every heuristic that
could fire on a human needs a second, independent signal or a strict anchor.
"""

from __future__ import annotations

from collections.abc import Collection

from mailbridge.message import ParsedMessage
from mailbridge.pipeline.autoreply import auto_reply_reason
from mailbridge.pipeline.bounces import bounce_evidence, has_null_return_path, heuristic_bounce
from mailbridge.pipeline.mailkinds import PERSON, Classification, MailKind
from mailbridge.pipeline.reports import UnreadableReport, classify_report

__all__ = ["LOOP_HEADER", "OWN_MESSAGE_ID_PREFIX", "Classification", "MailKind", "classify_message"]

LOOP_HEADER = "X-MailBridge-Loop"
OWN_MESSAGE_ID_PREFIX = "mb-"


def classify_message(
    message: ParsedMessage,
    *,
    own_domains: Collection[str] = (),
    loop_header_value: str | None = None,
) -> Classification:
    """Decide whether `message` is a person's post or machine mail to ignore.

    `own_domains` are the domains our outbound Message-IDs end in and
    `loop_header_value` the value our outbound mail stamps in X-MailBridge-Loop.
    """
    loop = _loop_reason(message, own_domains, loop_header_value)
    if loop is not None:
        return Classification(MailKind.LOOP, loop)
    report = classify_report(message)
    if isinstance(report, UnreadableReport):
        return heuristic_bounce(message, report.evidence)
    if report is not None:
        return report
    evidence = bounce_evidence(message)
    if evidence is not None:
        return heuristic_bounce(message, evidence)
    auto = auto_reply_reason(message)
    if auto is not None:
        return Classification(MailKind.AUTO_REPLY, auto)
    # RFC 5321 section 4.5.5: notifications are sent with a null reverse-path.
    # Sieve vacation replies (RFC 5230) use it too, hence after the check above.
    if has_null_return_path(message):
        return heuristic_bounce(message, "null envelope sender")
    return PERSON


def _loop_reason(
    message: ParsedMessage, own_domains: Collection[str], loop_header_value: str | None
) -> str | None:
    """Our own mail back again: our stamp, or one of our Message-IDs."""
    if loop_header_value:
        for value in message.header_all(LOOP_HEADER):
            if value.strip() == loop_header_value:
                return f"loop: our own {LOOP_HEADER} stamp came back"
    message_id = (message.message_id or "").lower()
    if message_id.startswith(OWN_MESSAGE_ID_PREFIX):
        for domain in own_domains:
            if message_id.endswith("@" + domain.lower()):
                return f"loop: our own Message-ID <{message.message_id}> came back"
    return None
