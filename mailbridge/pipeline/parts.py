"""Walking the MIME tree: the main text and HTML bodies, attachments and
inline images, their names (RFC 2231, RFC 2047) and decoded bytes.
"""

from __future__ import annotations

import binascii
import mimetypes
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from io import BytesIO

from mailbridge.message import MessagePart
from mailbridge.pipeline.decoding import (
    FOLD,
    POLICY,
    decode_base64,
    decode_bytes,
    decode_words,
    header_text,
    unfolded_text,
    without_nul,
)

# RFC 2045 section 5.1 parameter: a token or a (possibly unterminated)
# quoted string.
_PARAM = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)


_LOOSE_BOUNDARY = re.compile(r'boundary\s*=\s*("[^"]*"?|[^\s;]+)', re.I)


_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


@dataclass(frozen=True)
class _Leaf:
    """A MIME leaf, its position in the tree walk and where it sits."""

    index: int
    part: Message
    in_alternative: bool


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
        ctype = content_type(part)
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
    found = _LOOSE_BOUNDARY.search(FOLD.sub("", str(part.get("Content-Type", ""))))
    if not found or not isinstance(payload, bytes):
        return
    boundary = found[1].strip('"').encode("utf-8", "surrogateescape")
    if not boundary or b"--" + boundary not in payload:
        return
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n\n'
    try:
        fixed = BytesParser(policy=POLICY).parsebytes(head + payload)
    except Exception:
        return
    if fixed.is_multipart():
        defects.append("recovered unreadable multipart boundary")
        part.set_payload(fixed.get_payload())


def split_body(
    tree: Message, raw: bytes, defects: list[str]
) -> tuple[str | None, str | None, tuple[MessagePart, ...]]:
    """The main text and HTML bodies, and the parts worth keeping.

    Other text leaves (text/enriched, text/rfc822-headers in a DSN, a second
    text/plain) stay only in the tree for the stages that need them.
    """
    bodies: dict[str, list[_Leaf]] = {"text/plain": [], "text/html": []}
    others: list[_Leaf] = []
    for leaf in _walk(tree, defects):
        ctype = content_type(leaf.part)
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
    text = decode_bytes(data, _charset(chosen.part), defects, "body")
    return without_nul(text, defects).replace("\r\n", "\n")


def content_type(part: Message) -> str:
    """`type/subtype` in lower case; the stdlib keeps anything after a
    missing `;` (`multipart/mixed boundary=...`) in the subtype."""
    found = _MEDIA_TYPE.match(part.get_content_type())
    return found[0] if found else part.get_default_type()


def _disposition(part: Message) -> str:
    """`inline`, `attachment` or '' (RFC 2183 section 2)."""
    value = FOLD.sub(" ", str(part.get("Content-Disposition", ""))).strip()
    return re.split(r"[\s;]", value, maxsplit=1)[0].lower()


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def _attachment(leaf: _Leaf, html: str, linesep: str, defects: list[str]) -> MessagePart:
    ctype = content_type(leaf.part)
    data = _payload_bytes(leaf.part, linesep, defects)
    content_id = unfolded_text(leaf.part.get("Content-ID", ""), defects).strip("<> \t")
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
        name = _param(FOLD.sub("", str(value)), param, defects) if value else ""
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
    return decode_words(plain, defects) if plain else ""


def _rfc2231_value(sections: list[tuple[bool, str]], defects: list[str]) -> str:
    """Join RFC 2231 section 3 continuations and decode section 4 charsets."""
    charset = None
    data = bytearray()
    for number, (encoded, text) in enumerate(sections):
        if encoded and number == 0 and text.count("'") >= 2:
            charset, _language, text = text.split("'", 2)
        chunk = text.encode("utf-8", "surrogateescape")
        data.extend(urllib.parse.unquote_to_bytes(chunk) if encoded else chunk)
    return without_nul(decode_bytes(bytes(data), charset, defects, "file name"), defects)


def _generated_name(index: int, ctype: str, data: bytes, defects: list[str]) -> str:
    """A name for an unnamed part: the subject of a forwarded mail, else
    `part-N` plus the usual extension for its type."""
    if ctype in ("message/rfc822", "message/global"):
        try:
            inner = BytesParser(policy=POLICY).parsebytes(data, headersonly=True)
            subject = header_text(inner.get("Subject", ""), defects)
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
    cte = FOLD.sub("", header).split(";")[0].strip()
    if part.is_multipart():
        data, header = _flatten_body(part, linesep, defects), ""
    else:
        decoded = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else b""
    if header == cte:
        return data
    try:
        if cte == "base64":
            return decode_base64(data)
        if cte == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        defects.append(f"undecodable {cte} content")  # cte is base64 or q-p here
    return data


def _flatten_body(part: Message, linesep: str, defects: list[str]) -> bytes:
    """The body of a message/* part as bytes: for message/rfc822 the
    embedded mail, re-serialised with the line ends it arrived with."""
    out = BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, policy=POLICY.clone(linesep=linesep))
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
