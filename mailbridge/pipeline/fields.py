"""Structured header fields: addresses (RFC 5322 §3.4), Message-IDs
(§3.6.4) and dates (§3.3), decoded leniently with defects recorded.
"""

from __future__ import annotations

import email.charset
import email.utils
import re
from datetime import UTC, datetime
from email.message import Message
from email.policy import default

from mailbridge.message import Address
from mailbridge.pipeline.decoding import COMMENT, decode_words, from_8bit, unfolded_text

# The stdlib's strict address parser takes time quadratic in the length.
_STRICT_ADDRESS_LIMIT = 16_384

# A mailbox with nothing the strict parser would have to interpret: no
# quotes, comments, encoded words, groups, dots in the name or non-ASCII.
# Most mail's From/To/Cc look like this, and matching it is a tenth of the
# strict parser's cost; anything else goes to the strict parser.
_PLAIN_ADDR = r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_MAILBOX = re.compile(
    rf"\s*(?:(?:(?P<name>[A-Za-z0-9'_-]+(?: [A-Za-z0-9'_-]+)*)\s*)?<(?P<angle>{_PLAIN_ADDR})>"
    rf"|(?P<bare>{_PLAIN_ADDR}))\s*"
)


def addresses(tree: Message, name: str, defects: list[str]) -> tuple[Address, ...]:
    values = tree.get_all(name) or []
    found: list[Address] = []
    for value in values:
        found.extend(parse_address_list(unfolded_text(value, defects), defects))
    return tuple(found)


def parse_address_list(text: str, defects: list[str]) -> list[Address]:
    """Parse an address list, keeping every mailbox that has a name or address."""
    found = []
    for name, addr, domain in _address_pairs(text, defects):
        # The strict parser decodes RFC 2047 words itself, keeping bytes of
        # unknown charsets as surrogates; `from_8bit` settles those.
        email_ = "" if addr == "<>" else from_8bit(addr, defects).strip().lower()
        if not domain and not name and "<" not in text:
            # A bare word (`From: Whomever`) is a name, not a local address.
            name, email_ = addr.strip('"'), ""
        if email_ or name:
            found.append(Address(email=email_, name=decode_words(name, defects).strip()))
    return found


def _address_pairs(text: str, defects: list[str]) -> list[tuple[str, str, str]]:
    """(name, addr-spec, domain) triples: plain lists read directly, others
    by the stdlib's parsers."""
    plain = plain_address_pairs(text)
    return plain if plain is not None else strict_address_pairs(text, defects)


def plain_address_pairs(text: str) -> list[tuple[str, str, str]] | None:
    """The triples of a list of plain mailboxes, or None if any is not plain."""
    pairs = []
    for item in text.split(","):
        match = _PLAIN_MAILBOX.fullmatch(item)
        if match is None:
            return None
        addr = match["angle"] or match["bare"]
        pairs.append((match["name"] or "", addr, addr.partition("@")[2]))
    return pairs


def strict_address_pairs(text: str, defects: list[str]) -> list[tuple[str, str, str]]:
    """(name, addr-spec, domain) triples from the stdlib's RFC 5322 parser.

    Its older `getaddresses` reads old-style `addr (Name)` comments as names
    and is the fallback when the strict parser fails (it does on some
    groups) or would be too slow: its time grows with the square of the
    header's length. Both recurse, so a hostile header can exhaust the stack.
    """
    try:
        legacy: list[tuple[str, str]] | None = email.utils.getaddresses([text])
    except RecursionError:
        legacy = None
    if len(text) > _STRICT_ADDRESS_LIMIT:
        defects.append("address header too long for the strict parser")
        if legacy is not None:
            return [(name, addr, addr.partition("@")[2]) for name, addr in legacy]
        text = text[:_STRICT_ADDRESS_LIMIT]
    try:
        header = default.header_factory("To", text)
    except Exception:
        defects.append("unparseable address header")
        return [(name, addr, addr.partition("@")[2]) for name, addr in legacy or []]
    names = {addr.lower(): name for name, addr in legacy or [] if name}
    return [
        (a.display_name or names.get(a.addr_spec.lower(), ""), a.addr_spec, a.domain)
        for a in header.addresses
    ]


def message_ids(value: str | None, defects: list[str]) -> tuple[str, ...]:
    """Normalised ids: brackets and white space gone, duplicates dropped.

    Bracketed ids win; when there are none, each white space or comma
    separated word is taken as an id (RFC 5322 section 3.6.4 requires the
    brackets, but not every mailer sends them).
    """
    if not value:
        return ()
    text = COMMENT.sub(" ", unfolded_text(value, defects))
    ids = re.findall(r"<([^<>]*)>", text)
    if not ids:
        ids = re.split(r"[\s,<>]+", text)
    cleaned = (re.sub(r"\s+", "", found) for found in ids)
    return tuple(dict.fromkeys(found for found in cleaned if found))


def date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(unfolded_text(value, defects).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append("unparseable Date")
        return None
    if parsed.tzinfo is None:
        # RFC 5322 section 3.3: "-0000" means UTC with no local zone known.
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        defects.append("Date out of range")
        return None
