"""The parse stage: raw RFC 5322 bytes in, one `ParsedMessage` out.

Real mail is often broken, so this stage never raises. The MIME tree is built
by the stdlib parser in its most lenient (compat32) mode, with header values
handed back exactly as received; everything else (RFC 2047 words, charsets,
addresses, Message-IDs, file names) is decoded here with fallbacks, and each
problem met on the way is recorded in `ParsedMessage.defects`.
"""

from __future__ import annotations

import binascii
import codecs
import email.charset
import email.utils
import mimetypes
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32, default
from io import BytesIO

from mailbridge.message import Address, MessagePart, ParsedMessage


class _RawHeaderPolicy(Compat32):
    """compat32, but header values stay exactly as received.

    compat32 wraps values holding 8-bit bytes in `Header` objects, whose text
    we cannot decode ourselves, and refolds long lines when writing bytes
    back; an embedded mail should keep its bytes (and DKIM signature).
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value

    def fold_binary(self, name: str, value: str) -> bytes:
        return f"{name}: {value}{self.linesep}".encode("utf-8", "surrogateescape")


_POLICY = _RawHeaderPolicy()

# RFC 2047 section 2 encoded word; the charset may carry an RFC 2231 section 5
# language suffix. Spaces inside are illegal but common, so they are allowed.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t]+(?==\?)")
# RFC 5322 section 2.2.3: unfolding removes CRLF before white space.
_FOLD = re.compile(r"\r?\n(?=[ \t])|[\r\n]")
# RFC 2045 section 5.1 parameter: a token or a (possibly unterminated)
# quoted string.
_PARAM = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
_LOOSE_BOUNDARY = re.compile(r'boundary\s*=\s*("[^"]*"?|[^\s;]+)', re.I)
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_COMMENT = re.compile(r"\([^()]*\)")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"([!-9;-~]+)([ \t]*):")
_NEEDED = frozenset({b"from", b"subject", b"date", b"message-id", b"to"})

# Labels whose bytes are really decoded with a superset, as browsers do
# (WHATWG Encoding Standard, section 4.2).
_SUPERSETS = {
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
}
# Well-formed UTF-8 sequences, RFC 3629 section 4.
_UTF8_RUN = re.compile(
    rb"(?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]"
    rb"|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2})+"
)
# The stdlib's strict address parser takes time quadratic in the length.
_STRICT_ADDRESS_LIMIT = 16_384
# Single-byte labels that UTF-8 text is often mislabelled with.
_LATIN = frozenset({"cp1252", "iso8859-1", "iso8859-15"})


@dataclass(frozen=True)
class _Leaf:
    """A MIME leaf, its position in the tree walk and where it sits."""

    index: int
    part: Message
    in_alternative: bool


def parse_message(raw: bytes) -> ParsedMessage:
    """Decode `raw` into a `ParsedMessage`; never raises, records defects."""
    defects: list[str] = []
    tree = _parse_tree(raw, defects)
    try:
        return _build(raw, tree, defects)
    except Exception as exc:  # a bug of ours: keep the raw mail and the tree
        defects.append(f"parse failed: {type(exc).__name__}")
        return replace(_build(raw, Message(policy=_POLICY), defects), tree=tree)


def _parse_tree(raw: bytes, defects: list[str]) -> Message:
    parser = BytesParser(policy=_POLICY)
    raw = _repair_header_block(raw, defects)
    try:
        return parser.parsebytes(raw)
    except (RecursionError, MemoryError):
        defects.append("MIME structure too deep; headers only")
    except Exception as exc:
        defects.append(f"MIME parser failed: {type(exc).__name__}")
    try:
        return parser.parsebytes(raw, headersonly=True)
    except Exception:
        return Message(policy=_POLICY)


def _repair_header_block(raw: bytes, defects: list[str]) -> bytes:
    """Mend two header-block faults the stdlib parser stops at, losing every
    header after them (From and Subject included).

    White space before a colon is RFC 5322 section 4.5.4 obsolete syntax;
    it is removed. A stray line that is no header is folded into the one
    before it, but only when headers we need still follow; otherwise it is
    taken as the start of a body that lacks its blank separator line.
    """
    end = _BLANK_LINE.search(raw)
    head, rest = (raw[: end.start()], raw[end.start() :]) if end else (raw, b"")
    lines = head.split(b"\n")
    fields = [_FIELD_NAME.match(line) for line in lines]
    last = {found[1].lower(): n for n, found in enumerate(fields) if found}
    needed = {name: n for name, n in last.items() if name in _NEEDED}
    seen: set[bytes] = set()
    for number, (line, field) in enumerate(zip(lines, fields, strict=True)):
        if field:
            seen.add(field[1].lower())
            if field[2]:
                defects.append("white space before header colon")
                lines[number] = field[1] + line[field.end() - 1 :]
        elif line[:1] in (b" ", b"\t") or (number == 0 and line.startswith(b"From ")):
            continue
        elif any(n > number and name not in seen for name, n in needed.items()):
            defects.append("stray line in header block")
            lines[number] = b" " + line
        else:
            break
    return b"\n".join(lines) + rest


def _build(raw: bytes, tree: Message, defects: list[str]) -> ParsedMessage:
    try:
        text, html, attachments = _split_body(tree, raw, defects)
    except Exception as exc:  # a bug of ours: keep what the headers say
        defects.append(f"body not read: {type(exc).__name__}")
        text, html, attachments = None, None, ()
    senders = _addresses(tree, "From", defects)
    ids = _message_ids(tree.get("Message-ID"), defects)
    return ParsedMessage(
        raw=raw,
        message_id=ids[0] if ids else None,
        subject=_header_text(tree.get("Subject", ""), defects).strip(),
        sender=senders[0] if senders else None,
        reply_to=_addresses(tree, "Reply-To", defects),
        to=_addresses(tree, "To", defects),
        cc=_addresses(tree, "Cc", defects),
        date=_date(tree.get("Date"), defects),
        in_reply_to=_message_ids(tree.get("In-Reply-To"), defects),
        references=_message_ids(tree.get("References"), defects),
        thread_index=_unfolded_text(tree.get("Thread-Index", ""), defects).strip() or None,
        content_type=_content_type(tree),
        text=text,
        html=html,
        attachments=attachments,
        headers=tuple((name.strip(), _header_text(value, defects)) for name, value in tree.items()),
        defects=_collect_defects(tree, defects),
        tree=tree,
    )


def _collect_defects(tree: Message, defects: list[str]) -> tuple[str, ...]:
    """Our own defects, then the stdlib parser's, each named once."""
    found = list(defects)
    for part in tree.walk():
        found.extend(type(defect).__name__ for defect in getattr(part, "defects", ()))
    return tuple(dict.fromkeys(found))


# Header text ----------------------------------------------------------------


def _unfolded_text(value: object, defects: list[str]) -> str:
    """Unfold a raw header value and decode raw 8-bit bytes (RFC 6532)."""
    return _without_nul(_from_8bit(_FOLD.sub("", str(value)), defects), defects)


def _without_nul(text: str, defects: list[str]) -> str:
    """Drop NUL characters: no mail needs them, and databases refuse them."""
    if "\x00" not in text:
        return text
    defects.append("NUL characters removed")
    return text.replace("\x00", "")


def _printable(label: str) -> str:
    """A label from the mail, safe to quote in a defect."""
    return re.sub(r"[^!-~]", "?", label[:40])


def _from_8bit(text: str, defects: list[str]) -> str:
    """Text whose raw 8-bit bytes the parser kept as surrogates, decoded."""
    if text.isascii():
        return text
    data = text.encode("utf-8", "surrogateescape")
    return _decode_bytes(data, None, defects, "header")


def _header_text(value: object, defects: list[str]) -> str:
    """A header value as display text: unfolded, RFC 2047 words decoded."""
    return _decode_words(_FOLD.sub("", str(value)), defects)


def _decode_words(text: str, defects: list[str]) -> str:
    """Decode RFC 2047 encoded words, leaving malformed ones as they are.

    Adjacent words in one charset are joined as bytes before decoding: some
    senders split a multi-byte character across two words (RFC 2047
    section 5 forbids it), and white space between words is dropped
    (section 6.2). Raw 8-bit text around (and inside) words is tolerated.
    """
    text = _BETWEEN_WORDS.sub("", text) if "=?" in text else text
    out: list[str] = []
    pending: tuple[str, bytearray] | None = None
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        charset, data = match.group(1).split("*", 1)[0], _word_bytes(match[2], match[3])
        if data is None:
            defects.append("malformed encoded word")
            continue
        if pending and (match.start() != pos or pending[0].lower() != charset.lower()):
            out.append(_decode_bytes(bytes(pending[1]), pending[0], defects, "encoded word"))
            pending = None
        if pending is None:
            out.append(_from_8bit(text[pos : match.start()], defects))
            pending = (charset, bytearray())
        pending[1].extend(data)
        pos = match.end()
    if pending:
        out.append(_decode_bytes(bytes(pending[1]), pending[0], defects, "encoded word"))
    out.append(_from_8bit(text[pos:], defects))
    return _without_nul("".join(out), defects)


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    """An encoded word's bytes, or None when it is not really one."""
    raw = payload.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return binascii.a2b_qp(raw, header=True)
    if re.search(rb"[^A-Za-z0-9+/=\s]", raw):
        return None
    try:
        return _decode_base64(raw)
    except (binascii.Error, ValueError):
        return None


def _decode_base64(data: bytes) -> bytes:
    """RFC 2045 section 6.8: skip characters outside the alphabet, and
    tolerate missing or misplaced padding."""
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data.split(b"=", 1)[0])
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))


# Charsets --------------------------------------------------------------------


def _codec(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when unknown."""
    if not charset:
        return None
    label = email.charset.ALIASES.get(charset.strip().lower(), charset.strip())
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):
        return None
    return _SUPERSETS.get(name, name)


def _decode_bytes(data: bytes, charset: str | None, defects: list[str], what: str) -> str:
    """Bytes as text: the declared charset, else UTF-8, else the declared one
    with replacement characters, else UTF-8 runs with cp1252 between them."""
    codec = _codec(charset)
    if charset and codec is None:
        defects.append(f"unknown charset in {what}: {_printable(charset)}")
    if codec in _LATIN and not data.isascii() and _is_utf8(data):
        # A UTF-8 text labelled Latin-1 (a common lie) decodes without error
        # as Latin-1 too, but valid multi-byte UTF-8 is improbable there.
        defects.append(f"{what} labelled {_printable(charset or '')} but is UTF-8")
        codec = "utf-8"
    attempts = [(codec, "strict"), ("utf-8", "strict")]
    if codec not in (None, "ascii"):
        # Declared and known: a few bad bytes in it beat cp1252 mojibake.
        attempts.append((codec, "replace"))
    for attempt, errors in attempts:
        if attempt is None:
            continue
        try:
            text = data.decode(attempt, errors)
        except (UnicodeError, LookupError):
            continue
        # Codecs such as utf-7 can yield lone surrogates, which no later
        # stage (nor a database) can store.
        if not _SURROGATE.search(text):
            return text
    defects.append(f"undecodable {what}: UTF-8 where valid, else cp1252")
    return _utf8_or_cp1252(data)


def _utf8_or_cp1252(data: bytes) -> str:
    """Decode well-formed UTF-8 runs (RFC 3629 section 4) as UTF-8 and each
    other byte as cp1252 (latin-1 for its five holes): raw headers often
    mix both, or carry UTF-8 cut off mid-character."""
    out: list[str] = []
    pos = 0
    while pos < len(data):
        run = _UTF8_RUN.match(data, pos)
        if run:
            out.append(run[0].decode("utf-8"))
            pos = run.end()
            continue
        byte = data[pos : pos + 1]
        try:
            out.append(byte.decode("cp1252"))
        except UnicodeDecodeError:
            out.append(byte.decode("latin-1"))
        pos += 1
    return "".join(out)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Addresses, ids and dates ----------------------------------------------------


def _addresses(tree: Message, name: str, defects: list[str]) -> tuple[Address, ...]:
    values = tree.get_all(name) or []
    found: list[Address] = []
    for value in values[:1] if name == "From" else values:
        found.extend(_parse_addresses(_unfolded_text(value, defects), defects))
    return tuple(found)


def _parse_addresses(text: str, defects: list[str]) -> list[Address]:
    """Parse an address list, keeping every mailbox that has a name or address."""
    found = []
    for name, addr, domain in _address_pairs(text, defects):
        # The strict parser decodes RFC 2047 words itself, keeping bytes of
        # unknown charsets as surrogates; `_from_8bit` settles those.
        email_ = "" if addr == "<>" else _from_8bit(addr, defects).strip().lower()
        if not domain and not name and "<" not in text:
            # A bare word (`From: Whomever`) is a name, not a local address.
            name, email_ = addr.strip('"'), ""
        if email_ or name:
            found.append(Address(email=email_, name=_decode_words(name, defects).strip()))
    return found


def _address_pairs(text: str, defects: list[str]) -> list[tuple[str, str, str]]:
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


def _message_ids(value: str | None, defects: list[str]) -> tuple[str, ...]:
    """Normalised ids: brackets and white space gone, duplicates dropped.

    Bracketed ids win; when there are none, each white space or comma
    separated word is taken as an id (RFC 5322 section 3.6.4 requires the
    brackets, but not every mailer sends them).
    """
    if not value:
        return ()
    text = _COMMENT.sub(" ", _unfolded_text(value, defects))
    ids = re.findall(r"<([^<>]*)>", text)
    if not ids:
        ids = re.split(r"[\s,<>]+", text)
    cleaned = (re.sub(r"\s+", "", found) for found in ids)
    return tuple(dict.fromkeys(found for found in cleaned if found))


def _date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(_unfolded_text(value, defects).strip())
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


# Bodies and parts -------------------------------------------------------------


def _walk(tree: Message, defects: list[str]) -> Iterator[_Leaf]:
    """Every leaf in document order, without recursion (nesting is hostile).

    message/* parts are leaves: a forwarded mail stays one attachment.
    `get_payload()` without `decode` is avoided on leaves throughout: for
    8-bit content it replaces bytes with U+FFFD, or raises on odd charsets.
    """
    stack: list[tuple[Message, bool]] = [(tree, False)]
    index = 0
    while stack:
        part, in_alternative = stack.pop()
        index += 1
        ctype = _content_type(part)
        multipart = ctype.startswith("multipart/")
        if multipart and not part.is_multipart():
            _recover_parts(part, defects)
        if multipart and part.is_multipart():
            alternative = in_alternative or ctype == "multipart/alternative"
            children = [child for child in part.get_payload() if isinstance(child, Message)]
            stack.extend((child, alternative) for child in reversed(children))
        else:
            yield _Leaf(index, part, in_alternative)


def _recover_parts(part: Message, defects: list[str]) -> None:
    """Re-split a multipart whose boundary the stdlib could not read.

    Seen in real mail: no `;` before `boundary=`, or a quoted boundary folded
    across lines (unfolding, RFC 5322 section 2.2.3, joins it again).
    """
    payload = part.get_payload(decode=True)
    found = _LOOSE_BOUNDARY.search(_FOLD.sub("", str(part.get("Content-Type", ""))))
    if not found or not isinstance(payload, bytes):
        return
    boundary = found[1].strip('"').encode("utf-8", "surrogateescape")
    if not boundary or b"--" + boundary not in payload:
        return
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n\n'
    try:
        fixed = BytesParser(policy=_POLICY).parsebytes(head + payload)
    except Exception:
        return
    if fixed.is_multipart():
        defects.append("recovered unreadable multipart boundary")
        part.set_payload(fixed.get_payload())


def _split_body(
    tree: Message, raw: bytes, defects: list[str]
) -> tuple[str | None, str | None, tuple[MessagePart, ...]]:
    """The main text and HTML bodies, and the parts worth keeping.

    Other text leaves (text/enriched, text/rfc822-headers in a DSN, a second
    text/plain) stay only in the tree for the stages that need them.
    """
    bodies: dict[str, list[_Leaf]] = {"text/plain": [], "text/html": []}
    others: list[_Leaf] = []
    for leaf in _walk(tree, defects):
        ctype = _content_type(leaf.part)
        if _disposition(leaf.part) == "attachment" or _filename(leaf.part, defects):
            others.append(leaf)
        elif ctype in bodies:
            bodies[ctype].append(leaf)
        elif ctype.startswith("multipart/"):
            # A multipart whose boundary was never found: its text is the body.
            bodies["text/plain"].append(leaf)
        elif not ctype.startswith("text/"):
            others.append(leaf)
    text = _body_text(bodies["text/plain"], defects)
    html = _body_text(bodies["text/html"], defects)
    linesep = "\r\n" if b"\r\n" in raw[:65536] else "\n"
    parts = tuple(_attachment(leaf, html or "", linesep, defects) for leaf in others)
    return text, html, parts


def _body_text(leaves: list[_Leaf], defects: list[str]) -> str | None:
    """The first leaf, preferring one inside multipart/alternative, as text."""
    if not leaves:
        return None
    chosen = next((leaf for leaf in leaves if leaf.in_alternative), leaves[0])
    data = _payload_bytes(chosen.part, "\n", defects)
    text = _decode_bytes(data, _charset(chosen.part), defects, "body")
    return _without_nul(text, defects).replace("\r\n", "\n")


def _content_type(part: Message) -> str:
    """`type/subtype` in lower case; the stdlib keeps anything after a
    missing `;` (`multipart/mixed boundary=...`) in the subtype."""
    found = _MEDIA_TYPE.match(part.get_content_type())
    return found[0] if found else part.get_default_type()


def _disposition(part: Message) -> str:
    """`inline`, `attachment` or '' (RFC 2183 section 2)."""
    value = _FOLD.sub(" ", str(part.get("Content-Disposition", ""))).strip()
    return re.split(r"[\s;]", value, maxsplit=1)[0].lower()


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def _attachment(leaf: _Leaf, html: str, linesep: str, defects: list[str]) -> MessagePart:
    ctype = _content_type(leaf.part)
    data = _payload_bytes(leaf.part, linesep, defects)
    content_id = _unfolded_text(leaf.part.get("Content-ID", ""), defects).strip("<> \t")
    # RFC 2392: html refers to an inline part as `cid:` plus its Content-ID.
    referenced = bool(content_id) and f"cid:{content_id}".lower() in html.lower()
    return MessagePart(
        filename=_filename(leaf.part, defects) or _generated_name(leaf.index, ctype, data, defects),
        content_type=ctype,
        data=data,
        content_id=content_id or None,
        inline=_disposition(leaf.part) == "inline" or referenced,
    )


def _filename(part: Message, defects: list[str]) -> str:
    """The sender's file name: Content-Disposition `filename`, else the
    older Content-Type `name` (RFC 2183 section 2.3, RFC 2046 section 4.5.1)."""
    for header, param in (("Content-Disposition", "filename"), ("Content-Type", "name")):
        value = part.get(header)
        name = _param(_FOLD.sub("", str(value)), param, defects) if value else ""
        if name.strip():
            return name.strip()
    return ""


def _param(value: str, wanted: str, defects: list[str]) -> str:
    """One MIME parameter, decoded.

    RFC 2231 sections (`name*0*=utf-8''...`) win over the plain form, as
    RFC 6266 section 4.3 advises; quoted-pairs are undone per RFC 5322
    section 3.2.4; RFC 2047 words in the plain form are decoded although
    RFC 2047 section 5 forbids them there, because many mailers send them.
    """
    plain: str | None = None
    sections: dict[int, tuple[bool, str]] = {}
    for key, found in _PARAM.findall(value):
        if found.startswith('"'):
            found = re.sub(r"\\(.)", r"\1", found[1:].removesuffix('"'))
        match = re.fullmatch(re.escape(wanted) + r"(?:\*(\d{1,3}))?(\*?)", key.lower())
        if match and (match[1] or match[2]):
            sections.setdefault(int(match[1] or 0), (bool(match[2]), found.strip()))
        elif match and plain is None:
            plain = found.strip()
    if sections:
        return _rfc2231_value([sections[key] for key in sorted(sections)], defects)
    return _decode_words(plain, defects) if plain else ""


def _rfc2231_value(sections: list[tuple[bool, str]], defects: list[str]) -> str:
    """Join RFC 2231 section 3 continuations and decode section 4 charsets."""
    charset = None
    data = bytearray()
    for number, (encoded, text) in enumerate(sections):
        if encoded and number == 0 and text.count("'") >= 2:
            charset, _language, text = text.split("'", 2)
        chunk = text.encode("utf-8", "surrogateescape")
        data.extend(urllib.parse.unquote_to_bytes(chunk) if encoded else chunk)
    return _without_nul(_decode_bytes(bytes(data), charset, defects, "file name"), defects)


def _generated_name(index: int, ctype: str, data: bytes, defects: list[str]) -> str:
    """A name for an unnamed part: the subject of a forwarded mail, else
    `part-N` plus the usual extension for its type."""
    if ctype in ("message/rfc822", "message/global"):
        try:
            inner = BytesParser(policy=_POLICY).parsebytes(data, headersonly=True)
            subject = _header_text(inner.get("Subject", ""), defects)
        except Exception:
            subject = ""
        # Keep the name a plain file name: no path separators or controls.
        subject = re.sub(r"[\x00-\x1f\x7f/\\]+", "_", subject).strip()
        return f"{subject[:100] or f'part-{index}'}.eml"
    return f"part-{index}{mimetypes.guess_extension(ctype) or '.bin'}"


def _payload_bytes(part: Message, linesep: str, defects: list[str]) -> bytes:
    """A leaf's content with its Content-Transfer-Encoding undone.

    The stdlib decodes the encodings it recognises; its result is still
    encoded when the header is dressed up (`base64;`, trailing blanks), and
    a message/* part (RFC 2046 section 5.2.1 forbids encoding it, yet some
    mailers base64 it) is never decoded by it.
    """
    header = str(part.get("Content-Transfer-Encoding", "")).lower()
    cte = _FOLD.sub("", header).split(";")[0].strip()
    if part.is_multipart():
        data, header = _flatten_body(part, linesep, defects), ""
    else:
        decoded = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else b""
    if header == cte:
        return data
    try:
        if cte == "base64":
            return _decode_base64(data)
        if cte == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        defects.append(f"undecodable {cte} content")  # cte is base64 or q-p here
    return data


def _flatten_body(part: Message, linesep: str, defects: list[str]) -> bytes:
    """The body of a message/* part as bytes: for message/rfc822 the
    embedded mail, re-serialised with the line ends it arrived with."""
    out = BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, policy=_POLICY.clone(linesep=linesep))
    try:
        generator.flatten(part)
    except Exception:
        # The stdlib generator fails on a few broken 8-bit structures.
        defects.append("embedded message could not be re-serialised")
        return b""
    data = out.getvalue()
    if data.startswith(linesep.encode()):
        return data[len(linesep) :]
    return data.partition((linesep * 2).encode())[2]
