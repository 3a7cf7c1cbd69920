"""Decoding header and body text: RFC 2047 encoded words, charsets with
fallbacks (declared, UTF-8, the WHATWG supersets, cp1252), NULs and surrogates.

Everything here records what went wrong in `defects` and never raises.
"""

from __future__ import annotations

import binascii
import codecs
import email.charset
import email.utils
import re
from email.policy import Compat32


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


POLICY = _RawHeaderPolicy()


# RFC 2047 section 2 encoded word; the charset may carry an RFC 2231 section 5
# language suffix. Spaces inside are illegal but common, so they are allowed.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")


_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t]+(?==\?)")


# RFC 5322 section 2.2.3: unfolding removes CRLF before white space.
FOLD = re.compile(r"\r?\n(?=[ \t])|[\r\n]")


_SURROGATE = re.compile("[\ud800-\udfff]")


COMMENT = re.compile(r"\([^()]*\)")


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


# Single-byte labels that UTF-8 text is often mislabelled with.
_LATIN = frozenset({"cp1252", "iso8859-1", "iso8859-15"})


def unfolded_text(value: object, defects: list[str]) -> str:
    """Unfold a raw header value and decode raw 8-bit bytes (RFC 6532)."""
    return without_nul(from_8bit(FOLD.sub("", str(value)), defects), defects)


def without_nul(text: str, defects: list[str] | None = None) -> str:
    """Drop NUL characters: no mail needs them, and databases refuse them."""
    if "\x00" not in text:
        return text
    if defects is not None:
        defects.append("NUL characters removed")
    return text.replace("\x00", "")


def _printable(label: str) -> str:
    """A label from the mail, safe to quote in a defect."""
    return re.sub(r"[^!-~]", "?", label[:40])


def from_8bit(text: str, defects: list[str]) -> str:
    """Text whose raw 8-bit bytes the parser kept as surrogates, decoded."""
    if text.isascii():
        return text
    data = text.encode("utf-8", "surrogateescape")
    return decode_bytes(data, None, defects, "header")


def header_text(value: object, defects: list[str]) -> str:
    """A header value as display text: unfolded, RFC 2047 words decoded."""
    return decode_words(FOLD.sub("", str(value)), defects)


def decode_words(text: str, defects: list[str]) -> str:
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
            out.append(decode_bytes(bytes(pending[1]), pending[0], defects, "encoded word"))
            pending = None
        if pending is None:
            out.append(from_8bit(text[pos : match.start()], defects))
            pending = (charset, bytearray())
        pending[1].extend(data)
        pos = match.end()
    if pending:
        out.append(decode_bytes(bytes(pending[1]), pending[0], defects, "encoded word"))
    out.append(from_8bit(text[pos:], defects))
    return without_nul("".join(out), defects)


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    """An encoded word's bytes, or None when it is not really one."""
    raw = payload.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return binascii.a2b_qp(raw, header=True)
    if re.search(rb"[^A-Za-z0-9+/=\s]", raw):
        return None
    try:
        return decode_base64(raw)
    except (binascii.Error, ValueError):
        return None


def decode_base64(data: bytes) -> bytes:
    """RFC 2045 section 6.8: skip characters outside the alphabet, and
    tolerate missing or misplaced padding."""
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data.split(b"=", 1)[0])
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))


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


def decode_bytes(data: bytes, charset: str | None, defects: list[str], what: str) -> str:
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
