"""Mailbox names on the wire: IMAP quoted strings in modified UTF-7 (RFC 3501 5.1.3).

Neither aioimaplib nor stdlib imaplib encodes them: a folder such as
"Archivé/2024 Q1" works like "INBOX" only once quoted here (the importer and
the tests' Dovecot helpers both do).
"""

from __future__ import annotations

import base64
import re


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    encoded = ""
    pending = ""
    for char in name + "\0":
        if char != "\0" and not " " <= char <= "~":
            pending += char
            continue
        if pending:
            packed = base64.b64encode(pending.encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
            encoded += "&" + packed.decode() + "-"
            pending = ""
        if char != "\0":
            encoded += "&-" if char == "&" else char
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_mailbox(word: bytes) -> str:
    """The inverse of `quote_mailbox` for a quoted string or an atom from LIST."""
    text = word.decode("ascii")
    if text.startswith('"'):
        text = re.sub(r"\\(.)", r"\1", text[1:-1])

    def decode(match: re.Match[str]) -> str:
        packed = match.group(1)
        if not packed:
            return "&"
        padded = packed.replace(",", "/") + "=" * (-len(packed) % 4)
        return base64.b64decode(padded).decode("utf-16-be")

    return re.sub(r"&([^-]*)-", decode, text)
