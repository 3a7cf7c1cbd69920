"""The From field's mailboxes, read the way a forger cannot bend.

`From: carol@company.example <eve@other.example>` is one mailbox whose
display text looks like an address: mail clients show carol, the mail is
eve's, and a DMARC check (RFC 7489 §6.6.1) judges other.example. So the
actual address, the last angle-addr of a mailbox (RFC 5322 §3.4), is the
author, never the display text; a display text that is another address, a
mailbox with several addresses, several mailboxes or several From fields
make the field suspicious, and the warning is kept with the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from mailbridge.message import Address
from mailbridge.pipeline.decoding import unfolded_text
from mailbridge.pipeline.fields import parse_address_list

# Something a reader would take for an address, wherever it is written.
_ADDRESS_LIKE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")  # RFC 2047, read decoded


@dataclass(frozen=True)
class FromField:
    authors: tuple[Address, ...]
    warning: str  # "" when nothing is suspicious


@dataclass(frozen=True)
class _Mailbox:
    text: str
    angles: tuple[str, ...]  # contents of its top-level <...>, in order
    display: str  # what comes before its last angle-addr


def read_from_field(tree: Message, defects: list[str]) -> FromField:
    """The mailboxes of every From field, and why they are suspicious."""
    values = tree.get_all("From") or []
    warnings = ["several From fields"] if len(values) > 1 else []
    authors: list[Address] = []
    for value in values:
        for mailbox in _split_mailboxes(unfolded_text(value, defects)):
            authors.extend(_read_mailbox(mailbox, warnings, defects))
    if len({a.email for a in authors if a.email}) > 1:
        warnings.append("From names several addresses: " + ", ".join(a.email for a in authors))
    warning = "; ".join(dict.fromkeys(warnings))
    if warning:
        defects.append(f"suspicious From: {warning}")
    return FromField(tuple(authors), warning)


def _read_mailbox(mailbox: _Mailbox, warnings: list[str], defects: list[str]) -> list[Address]:
    parsed = parse_address_list(mailbox.text, defects)
    if not mailbox.angles:
        found = list(dict.fromkeys(a.lower() for a in _ADDRESS_LIKE.findall(mailbox.text)))
        # `carol@x eve@y`: no brackets, two addresses; each is an author.
        return [Address(a) for a in found] if len(found) > 1 else parsed
    actual = mailbox.angles[-1].strip().lower()
    if "@" not in actual:
        return parsed
    named = [a for a in parsed if a.email == actual]
    display = named[0].name if named else ""
    # The decoded display name, and the raw text before the address (which
    # the parser may have misread, `carol@x <eve@y>`, or kept as a comment).
    raw_display = _ENCODED_WORD.sub(" ", mailbox.display)
    shown = {a.lower() for a in _ADDRESS_LIKE.findall(f"{display} {raw_display}")}
    if shown - {actual}:
        warnings.append(f"display text {', '.join(sorted(shown))} is not the address {actual}")
        return [Address(actual)]
    return [Address(actual, display)]


def _split_mailboxes(text: str) -> list[_Mailbox]:
    """Split at top-level commas, noting each mailbox's angle-addrs; quoted
    strings and comments (which may hold commas and brackets) are skipped.
    One pass: linear in the field's length."""
    mailboxes: list[_Mailbox] = []
    start, opened, last_open = 0, -1, -1
    angles: list[str] = []
    quoted, escaped, depth = False, False, 0
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
        elif opened >= 0:
            if char == ">":
                angles.append(text[opened + 1 : i])
                last_open, opened = opened, -1
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        elif char == "<":
            opened = i
        elif char == ",":
            mailboxes.append(_mailbox(text, start, i, angles, last_open))
            start, angles, last_open = i + 1, [], -1
    mailboxes.append(_mailbox(text, start, len(text), angles, last_open))
    return [m for m in mailboxes if m.text.strip()]


def _mailbox(text: str, start: int, end: int, angles: list[str], last_open: int) -> _Mailbox:
    display = text[start:last_open] if last_open >= 0 else ""
    return _Mailbox(text[start:end], tuple(angles), display)
