"""Bounces that are not RFC 3464 reports: the notices real MTAs send
(qmail, Exim, old Exchange, GroupWise...), told by sender, subject and body.

flufl.bounce finds the failed addresses; our own scan of the notice text is
the fallback where it finds none.
"""

from __future__ import annotations

import email.message
import email.utils
import logging
import re
from collections.abc import Collection

from flufl.bounce import all_failures

from mailbridge.message import ParsedMessage
from mailbridge.pipeline.mailkinds import Classification, MailKind, collapsed_subject
from mailbridge.pipeline.reports import own_parts

logger = logging.getLogger(__name__)


_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
# Local parts MTAs send bounces from: MAILER-DAEMON by long convention, and
# MDaemon's own.  postmaster (RFC 5321 section 4.5.1) is also read by people,
# who may write from it, so it counts only with a second sign.
_DAEMON_LOCALPARTS = frozenset(
    {"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "mdaemon"}
)
# Matched on the raw From, as some MTAs write it unparseably
# (`<Postmaster\@example.com@example.com>`).
_DAEMON_FROM = re.compile(r"(^|[<\s\"'])(mailer[-_]?daemon|mail-daemon|mdaemon)\\?@", re.I)
_POSTMASTER_FROM = re.compile(r"(^|[<\s\"'])postmaster\\?@", re.I)
_DAEMON_NAMES = re.compile(
    r"^(mail delivery (sub)?system|mail delivery service|mailer.daemon)$", re.I
)
# Where a bounce's own text ends and the returned message begins.
_RETURNED_MARK = re.compile(
    r"original message|returned message|copy of (the|your) message|"
    r"header(s)? of the (original|source)|message header|^received:|^return-path:",
    re.I,
)
_TEMPORARY = re.compile(
    r"\bdelay|\bwarning\b|will (be )?retr|still (being )?retr|not yet been delivered|"
    r"temporar|\b4\.\d{1,3}\.\d{1,3}\b",
    re.I,
)
_PERMANENT = re.compile(r"permanent|\b5\.\d{1,3}\.\d{1,3}\b|\b5[0-5]\d\b", re.I)

# Subjects of MTA failure notices.  Anchored at the start: a person who asks
# "why did my mail bounce?" writes "Re:" or their own words first.  Lotus Notes
# instead answers "RE: <subject> : non remis (delivery failed)", hence the tail.
_BOUNCE_SUBJECT = re.compile(
    r"^\W*(undeliverable|undelivered|non-?deliverable|non-?delivery|"
    r"((permanent|temporary|mail) )?delivery (status notification|report|failure|failed|"
    r"has failed|problem|delayed|warning)|mail delivery failed|returned mail\s*[:-]|"
    r"failure notice|mail system error|(mail|message) could not be delivered|"
    r"warning: could not send|delayed mail|could not send message|"
    r"message status - undeliverable|unzustellbar|nicht zustellbar|non remis|"
    r"non distribuable|no se puede entregar|non recapitabile|onbestelbaar|não entregue|"
    r"olevererbart|kan ikke leveres|недоставлен|не доставлен|配信不能|无法投递|退信)"
    r"|\((delivery failed|undeliverable|non remis)\)\s*$",
    re.I,
)


def _from_address(message: ParsedMessage) -> tuple[str, str]:
    """(display name, lower-case address) of From; ("", "") when absent."""
    if message.sender is not None:
        return message.sender.name, message.sender.email.lower()
    name, address = email.utils.parseaddr(message.header("From") or "")
    return name, address.lower()


def has_null_return_path(message: ParsedMessage) -> bool:
    """A `<>` reverse-path, as recorded by the delivering MTA."""
    return any(
        re.fullmatch(r"\s*<\s*>\s*", value)
        for name in ("Return-Path", "X-Envelope-From")
        for value in message.header_all(name)
    )


def bounce_evidence(message: ParsedMessage) -> str | None:
    """Why this looks like a non-standard MTA failure notice, if it does.

    Sure signs alone suffice: a From reserved for the mail system, an empty
    From, or Exim's and Gmail's X-Failed-Recipients.  A postmaster sender or a
    bounce subject needs one more sign: the other one, a returned message, or
    addresses that flufl.bounce recognises as failed.
    """
    name, address = _from_address(message)
    raw_from = message.header("From") or ""
    localpart = address.rpartition("@")[0]
    if (
        localpart in _DAEMON_LOCALPARTS
        or _DAEMON_FROM.search(raw_from)
        or _DAEMON_NAMES.match(name.strip())
    ):
        return f"sender {address or raw_from.strip()}"
    if not address and re.search(r"<\s*>", raw_from):
        return "empty From"
    if message.header("X-Failed-Recipients"):
        return "X-Failed-Recipients"
    signs = []
    if localpart == "postmaster" or _POSTMASTER_FROM.search(raw_from):
        signs.append(f"sender {address or raw_from.strip()}")
    if _BOUNCE_SUBJECT.search(collapsed_subject(message)):
        signs.append("bounce subject")
    if not signs:
        return None
    if len(signs) < 2 and message.tree is not None:
        if _has_returned_message(message.tree):
            signs.append("returned message")
        elif any(_flufl_failures(message.tree)):
            signs.append("failed addresses")
    return ", ".join(signs) if len(signs) > 1 else None


def _has_returned_message(tree: email.message.Message) -> bool:
    return any(
        part.get_content_type() in {"message/rfc822", "text/rfc822-headers"}
        for part in own_parts(tree)
    )


def heuristic_bounce(message: ParsedMessage, evidence: str) -> Classification:
    """A failure notice without a readable DSN: find its addresses.

    Sources in order of trust: the MTA's own X-Failed-Recipients, flufl.bounce's
    per-MTA detectors, and last our generic scan of the notice text.
    """
    addresses: tuple[str, ...] = ()
    permanent: bool | None = None
    failed_header = ", ".join(message.header_all("X-Failed-Recipients"))
    if failed_header:
        addresses = _unique(_ADDRESS.findall(failed_header))
    if not addresses and message.tree is not None:
        temporary, permanent_set = _flufl_failures(message.tree)
        if permanent_set or temporary:
            addresses, permanent = _unique(permanent_set or temporary), bool(permanent_set)
    notice = _notice_text(message)
    if not addresses:
        addresses = _scan_notice(message, notice)
    if permanent is None and addresses:
        text = f"{message.subject}\n{notice}"
        permanent = not (_TEMPORARY.search(text) and not _PERMANENT.search(text))
    if not addresses:
        return Classification(MailKind.BOUNCE, f"bounce ({evidence}): no failed address found")
    label = "permanent): failed" if permanent else "temporary): delayed"
    reason = f"bounce ({evidence}, {label} " + ", ".join(addresses)
    return Classification(MailKind.BOUNCE, reason, addresses, permanent)


def _flufl_failures(tree: email.message.Message) -> tuple[frozenset[str], frozenset[str]]:
    """(temporary, permanent) addresses found by flufl.bounce's detectors."""
    try:
        temporary, permanent = all_failures(tree)
    except Exception:  # a detector choking on hostile mail must not stop the pipeline
        logger.warning("flufl.bounce failed on a message; using our own scan", exc_info=True)
        return frozenset(), frozenset()
    return _decode(temporary), _decode(permanent)


def _decode(addresses: frozenset[bytes]) -> frozenset[str]:
    decoded = (address.decode("ascii", "replace").strip().lower() for address in addresses)
    return frozenset(address for address in decoded if "@" in address)


def _unique(addresses: Collection[str]) -> tuple[str, ...]:
    return tuple(sorted({address.lower() for address in addresses}))


def _notice_text(message: ParsedMessage) -> str:
    """The MTA's own words: the first text/plain part, cut where the returned
    message starts."""
    text = message.text or ""
    if message.tree is not None:
        for part in own_parts(message.tree):
            if part.get_content_type() == "text/plain" and not part.is_multipart():
                raw = part.get_payload(decode=True)
                charset = part.get_content_charset() or "latin-1"
                if isinstance(raw, bytes):
                    text = raw.decode(charset if _known_charset(charset) else "latin-1", "replace")
                break
    lines = []
    for line in text.splitlines():
        if _RETURNED_MARK.search(line):
            break
        lines.append(line)
    return "\n".join(lines)


def _known_charset(charset: str) -> bool:
    try:
        b"".decode(charset)
    except (LookupError, ValueError):
        return False
    return True


def _scan_notice(message: ParsedMessage, notice: str) -> tuple[str, ...]:
    """Addresses the notice names, other than the notice's own correspondents.

    Our last resort when no detector knows the MTA (flufl.bounce 6.0 drops any
    address whose domain has a hyphen, such as t-online.de).
    """
    correspondents = {
        address.lower()
        for name in ("From", "To", "Cc", "Sender", "Reply-To", "Return-Path")
        for _, address in email.utils.getaddresses(message.header_all(name))
    }
    found = {address.lower().strip(".") for address in _ADDRESS.findall(notice)}
    return _unique(
        {
            address
            for address in found - correspondents
            if address.partition("@")[0] not in _DAEMON_LOCALPARTS | {"postmaster"}
        }
    )
