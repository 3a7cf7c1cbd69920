"""Classify stage: tell mail a person wrote for the group from machine mail.

Machine mail (bounces, auto-replies, read receipts, complaints, our own posts
coming back) is recorded as ignored and never posted.  The checks run from the
most certain to the least: our loop stamp, then the MIME report types
(RFC 6522), then who sent the message and how, and only last its subject.
A person's post that we throw away is lost silently, so every heuristic that
could fire on a human needs a second, independent signal or a strict anchor.
"""

from __future__ import annotations

import email.message
import email.utils
import enum
import logging
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from types import MappingProxyType

from flufl.bounce import all_failures

from mailbridge.message import ParsedMessage

logger = logging.getLogger(__name__)

LOOP_HEADER = "X-MailBridge-Loop"
OWN_MESSAGE_ID_PREFIX = "mb-"


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


@dataclass(frozen=True)
class _Recipient:
    """One per-recipient block of a DSN (RFC 3464 section 2.3)."""

    address: str
    action: str
    status: str


_PERSON = Classification(MailKind.PERSON, "person: no sign of machine mail")
# Report bodies (RFC 3464, RFC 8098, RFC 5965; "global" ones from RFC 6533).
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
_LIST_HEADERS = (
    "List-Id",
    "List-Post",
    "List-Unsubscribe",
    "List-Help",
    "Mailing-List",  # ezmlm
    "X-Mailing-List",  # SmartList, vger
    "X-BeenThere",  # Mailman 2
    "X-Mailman-Version",
    "X-ML-Name",  # fml
)
_LIST_SENDER = re.compile(r"^(owner-[^@]+|[^@]+-(owner|request|bounces|admin))(\+[^@]*)?@", re.I)
# Out-of-office subjects, English first, then fr, de, es, it, nl, pt, sv, da/no,
# fi, pl, cs, ru, ja, zh.  A phrase counts only at the start and only when
# followed by the end of the subject, a separator or a word like "reply":
# "Out of Office: Re: agenda" is a robot, "Out of office parties" a person.
_OOO_PHRASES = (
    r"out of (the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|"
    r"automatic response|vacation reply|away from (the )?office|"
    r"r[ée]ponse automatique|absen(ce|t) du bureau|message d'absence|"
    r"abwesenheitsnotiz|automatische antwort|abwesenheitsmeldung|"
    r"respuesta autom[áa]tica|fuera de (la )?oficina|risposta automatica|fuori sede|"
    r"fuori ufficio|automatisch antwoord|resposta autom[áa]tica|fora do escrit[óo]rio|"
    r"automatiskt svar|fr[åa]nvaromeddelande|automatisk svar|autosvar|ikke på kontoret|"
    r"automaattinen vastaus|automatyczna odpowied[źz]|automatick[áa] odpov[ěe][ďd]|"
    r"автоматический ответ|автоответ|自動応答|自動返信|自动回复|自動回覆"
)
# Single words that are also ordinary vocabulary ("Absence policy for December"):
# these need a colon straight after them, as responders write "Absence: Re: ...".
_OOO_WORDS = (
    r"absence|absent|abwesend|abwesenheit|ausente|ausencia|assente|assenza|afwezig|"
    r"aus[êe]ncia|fr[åa]nvaro|fravær|fraværende|poissa|nieobecno[śs][ćc]|auto"
)
_OOO_SUBJECT = re.compile(
    rf"^[\s\[(*]*(?:(?:{_OOO_PHRASES})(?:\s*(?:reply|autoreply|auto-reply|notice|"
    rf"notification|message|response))?\s*(?:$|[:：\-–—()\[\]*|,.!])|(?:{_OOO_WORDS})\s*[:：])",
    re.I,
)


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
    report = _classify_report(message)
    if report is not None:
        return report
    evidence = _bounce_evidence(message)
    if evidence is not None:
        return _heuristic_bounce(message, evidence)
    auto = _auto_reply_reason(message)
    if auto is not None:
        return Classification(MailKind.AUTO_REPLY, auto)
    # RFC 5321 section 4.5.5: notifications are sent with a null reverse-path.
    # Sieve vacation replies (RFC 5230) use it too, hence after the check above.
    if _has_null_return_path(message):
        return _heuristic_bounce(message, "null envelope sender")
    return _PERSON


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


def _own_parts(part: email.message.Message) -> Iterator[email.message.Message]:
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
                yield from _own_parts(child)


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
    for part in _own_parts(tree):
        found = _REPORT_PART_TYPES.get(part.get_content_type())
        if found is not None:
            return found
    return declared


def _classify_report(message: ParsedMessage) -> Classification | None:
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
    for part in _own_parts(tree):
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


def _classify_dsn(message: ParsedMessage) -> Classification:
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
    return _heuristic_bounce(message, "DSN without recipient fields")


def _describe(failures: list[tuple[str, str]]) -> str:
    return ", ".join(f"{address} ({code})" if code else address for address, code in failures)


def _from_address(message: ParsedMessage) -> tuple[str, str]:
    """(display name, lower-case address) of From; ("", "") when absent."""
    if message.sender is not None:
        return message.sender.name, message.sender.email.lower()
    name, address = email.utils.parseaddr(message.header("From") or "")
    return name, address.lower()


def _subject(message: ParsedMessage) -> str:
    """The subject with folding and runs of white space collapsed."""
    return " ".join(message.subject.split())


def _has_null_return_path(message: ParsedMessage) -> bool:
    """A `<>` reverse-path, as recorded by the delivering MTA."""
    return any(
        re.fullmatch(r"\s*<\s*>\s*", value)
        for name in ("Return-Path", "X-Envelope-From")
        for value in message.header_all(name)
    )


def _bounce_evidence(message: ParsedMessage) -> str | None:
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
    if _BOUNCE_SUBJECT.search(_subject(message)):
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
        for part in _own_parts(tree)
    )


def _heuristic_bounce(message: ParsedMessage, evidence: str) -> Classification:
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
        for part in _own_parts(message.tree):
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


def _auto_reply_reason(message: ParsedMessage) -> str | None:
    """RFC 3834 responders, vendor autoreply headers, bulk mail, OOO subjects.

    X-Auto-Response-Suppress is not a signal: Outlook sets it on ordinary mail
    to ask others not to auto-reply.  Nor is X-MS-Exchange-Inbox-Rules-Loop:
    Exchange adds it when an inbox rule forwards a person's mail, too.
    """
    auto_submitted = _header_token(message, "Auto-Submitted")  # RFC 3834 section 5
    if auto_submitted and auto_submitted != "no":
        return f"auto-reply (Auto-Submitted: {auto_submitted})"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        value = _header_token(message, name)
        if value is not None and value not in {"no", "false", "0"}:
            return f"auto-reply ({name})"
    if _header_token(message, "X-Autogenerated") == "reply":  # GroupWise
        return "auto-reply (X-Autogenerated: Reply)"
    if _header_token(message, "X-List-Administrivia") == "yes":  # Mailman
        return "auto-reply (mailing-list administrative notice)"
    precedence = _header_token(message, "Precedence") or _header_token(message, "X-Precedence")
    if precedence == "auto_reply" or (
        precedence in {"bulk", "junk"} and not _is_list_post(message)
    ):
        return f"auto-reply (Precedence: {precedence})"
    subject = _subject(message)
    if _OOO_SUBJECT.match(subject):
        return f"auto-reply (out-of-office subject: {subject[:60]!r})"
    return None


def _is_list_post(message: ParsedMessage) -> bool:
    """A post relayed by a mailing list.

    List servers stamp Precedence on every post they relay (Fedora's Mailman
    uses `junk`, vger and 1990s Majordomo `bulk`), so there it says nothing
    about the author.  Lists show themselves by RFC 2369 and RFC 2919 List-*
    headers or, before those, by their own headers and a Sender of the form
    owner-list@ or list-owner@, -request@, -bounces@.
    """
    if any(message.header(name) is not None for name in _LIST_HEADERS):
        return True
    _, sender = email.utils.parseaddr(message.header("Sender") or "")
    return bool(_LIST_SENDER.match(sender))


def _header_token(message: ParsedMessage, name: str) -> str | None:
    """The first word of a header, lower-cased, without comments or parameters."""
    value = message.header(name)
    if value is None:
        return None
    value = re.sub(r"\([^)]*\)", "", value).split(";")[0].strip().lower()
    return value or None
