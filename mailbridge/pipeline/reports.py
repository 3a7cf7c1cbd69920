"""Machine reports by their MIME structure: RFC 6522 multipart/report, with
RFC 3464 delivery-status notifications read per recipient (Action, Status).
"""

from __future__ import annotations

import email.message
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType

from mailbridge.message import ParsedMessage
from mailbridge.pipeline.mailkinds import Classification, MailKind


@dataclass(frozen=True)
class _Recipient:
    """One per-recipient block of a DSN (RFC 3464 section 2.3)."""

    address: str
    action: str
    status: str


_REPORT_PART_TYPES = MappingProxyType(
    {
        "message/delivery-status": "delivery-status",
        "message/global-delivery-status": "delivery-status",
        "message/disposition-notification": "disposition-notification",
        "message/global-disposition-notification": "disposition-notification",
        "message/feedback-report": "feedback-report",
    }
)
# RFC 3463 enhanced status code: class.subject.detail, up to three digits each.
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


def own_parts(part: email.message.Message) -> Iterator[email.message.Message]:
    """The MIME parts of a message, without descending into attached messages.

    A person who forwards a bounce as an attachment wrote a message, not a
    bounce: what counts is the structure of the message itself.
    """
    yield part
    content_type = part.get_content_type()
    if content_type == "message/rfc822" or content_type in _REPORT_PART_TYPES:
        return
    payload = part.get_payload()
    if isinstance(payload, list):
        for child in payload:
            if isinstance(child, email.message.Message):
                yield from own_parts(child)


def _report_type(tree: email.message.Message) -> str | None:
    """The RFC 6522 report type, from the parameter or else from the parts.

    Some senders (Yahoo's feedback loop, for one) omit `report-type`, and some
    MTAs send a bare message/delivery-status, so the parts are the fallback.
    """
    declared = None
    if tree.get_content_type() == "multipart/report":
        param = tree.get_param("report-type")
        if isinstance(param, str) and param.strip():
            declared = param.strip().lower()
        if declared in _REPORT_PART_TYPES.values():
            return declared
    for part in own_parts(tree):
        found = _REPORT_PART_TYPES.get(part.get_content_type())
        if found is not None:
            return found
    return declared


@dataclass(frozen=True)
class UnreadableReport:
    """A DSN whose recipient fields cannot be read: a bounce all the same, to be
    read by the heuristics of bounces.py."""

    evidence: str


def classify_report(message: ParsedMessage) -> Classification | UnreadableReport | None:
    """DSNs (RFC 3464), MDNs (RFC 8098), ARF complaints (RFC 5965) and the rest
    of multipart/report (TLS and DMARC reports)."""
    if message.tree is None:
        return None
    report_type = _report_type(message.tree)
    if report_type == "delivery-status":
        return _classify_dsn(message)
    if report_type == "disposition-notification":
        return Classification(MailKind.REPORT, "report: read receipt (MDN, RFC 8098)")
    if report_type == "feedback-report":
        feedback = _first_report_field(message.tree, "Feedback-Type") or "unspecified"
        return Classification(MailKind.REPORT, f"report: feedback report (ARF, {feedback})")
    if report_type is not None:  # RFC 6522 reports are machine-made by definition
        return Classification(MailKind.REPORT, f"report: {report_type}")
    return None


def _report_blocks(tree: email.message.Message) -> Iterator[email.message.Message]:
    """The header blocks of every report body part in the message."""
    for part in own_parts(tree):
        if part.get_content_type() not in _REPORT_PART_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):  # the email package splits these bodies
            for block in payload:
                if isinstance(block, email.message.Message):
                    yield block
                    yield from _encoded_block(block)
        elif isinstance(payload, str):  # e.g. RFC 6533 global types, left as text
            for chunk in re.split(r"\r?\n\s*\r?\n", payload):
                yield email.message_from_string(chunk.strip())


def _encoded_block(block: email.message.Message) -> Iterator[email.message.Message]:
    """A per-recipient block some relays base64-encode inside the report part."""
    if block.get("Content-Transfer-Encoding"):
        body = block.get_payload(decode=True)
        if isinstance(body, bytes) and body.strip():
            yield email.message_from_bytes(body)


def _first_report_field(tree: email.message.Message, name: str) -> str | None:
    for block in _report_blocks(tree):
        value = block.get(name)
        if value:
            return str(value).strip()
    return None


def _dsn_recipients(tree: email.message.Message) -> list[_Recipient]:
    """Per-recipient fields (RFC 3464 section 2.3).

    Original-Recipient is the address as we gave it, so the member's; the
    Final-Recipient may be a forwarding target or an internal name
    (`user@sims-ms-daemon`), and is the fallback when there is no original.
    """
    recipients = []
    for block in _report_blocks(tree):
        address = _dsn_address(block.get("Original-Recipient")) or _dsn_address(
            block.get("Final-Recipient")
        )
        if address is not None:
            action = str(block.get("Action", "")).strip().lower()
            status = str(block.get("Status", "")).strip()
            recipients.append(_Recipient(address, action, status))
    return recipients


def _dsn_address(value: object) -> str | None:
    """`rfc822; <user@example.org>` (RFC 3464 section 2.3.2) to the address.

    Some MTAs leave out the address type, so the `;` is optional.
    """
    if value is None:
        return None
    text = str(value)
    address = text.partition(";")[2] if ";" in text else text
    address = address.strip().strip("<>").strip().lower()
    return address if "@" in address else None


def _classify_dsn(message: ParsedMessage) -> Classification | UnreadableReport:
    """Read Action and Status of every recipient (RFC 3464 sections 2.3.3-4).

    The Action decides: `failed` means the MTA gave up, so the member missed
    the post, even when the Status is 4.x.x (4.4.7, delivery time expired, is
    what a dead host ends in); `delayed` means it is still trying.  Only
    without a usable Action does the Status class decide (5 permanent, 4 not).
    This is also how Mailman, and the corpus it left us, reads them.
    """
    assert message.tree is not None
    recipients = _dsn_recipients(message.tree)
    permanent: list[tuple[str, str]] = []
    temporary: list[tuple[str, str]] = []
    for recipient in recipients:
        code = _STATUS.search(recipient.status)
        klass = code.group(1) if code else recipient.status[:1]
        if recipient.action in {"delivered", "relayed", "expanded"} or klass == "2":
            continue
        # "failure" is a misspelling seen in the wild (Belgian MTA, 2000).
        if recipient.action.startswith("fail") or (recipient.action != "delayed" and klass == "5"):
            bucket = permanent
        else:
            bucket = temporary
        failure = (recipient.address, code.group(0) if code else "")
        if failure not in bucket:
            bucket.append(failure)
    if permanent or temporary:
        if permanent:
            reason = f"bounce (DSN, permanent): failed {_describe(permanent)}"
        else:
            reason = f"bounce (DSN, temporary): delayed {_describe(temporary)}"
        if permanent and temporary:
            reason += "; delayed " + _describe(temporary)
        addresses = tuple(dict.fromkeys(address for address, _ in permanent or temporary))
        return Classification(MailKind.BOUNCE, reason, addresses, bool(permanent))
    if recipients:
        return Classification(MailKind.REPORT, "report: delivery succeeded (DSN)")
    # A report body we cannot read: the heuristics still find the addresses.
    return UnreadableReport("DSN without recipient fields")


def _describe(failures: list[tuple[str, str]]) -> str:
    return ", ".join(f"{address} ({code})" if code else address for address, code in failures)
