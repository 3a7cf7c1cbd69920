"""The parse stage: raw RFC 5322 bytes in, one `ParsedMessage` out.

Real mail is often broken, so this stage never raises. The MIME tree is built
by the stdlib parser in its most lenient (compat32) mode, with header values
handed back exactly as received; everything else (RFC 2047 words, charsets,
addresses, Message-IDs, file names) is decoded here with fallbacks, and each
problem met on the way is recorded in `ParsedMessage.defects`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from email.message import Message
from email.parser import BytesParser

from mailbridge.message import ParsedMessage
from mailbridge.pipeline.authors import read_from_field
from mailbridge.pipeline.decoding import POLICY, header_text, unfolded_text
from mailbridge.pipeline.fields import addresses, date, message_ids
from mailbridge.pipeline.parts import content_type, split_body

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


_FIELD_NAME = re.compile(rb"([!-9;-~]+)([ \t]*):")


_NEEDED = frozenset({b"from", b"subject", b"date", b"message-id", b"to"})


def parse_message(raw: bytes) -> ParsedMessage:
    """Decode `raw` into a `ParsedMessage`; never raises, records defects."""
    defects: list[str] = []
    tree = _parse_tree(raw, defects)
    try:
        return _build(raw, tree, defects)
    except Exception as exc:  # a bug of ours: keep the raw mail and the tree
        defects.append(f"parse failed: {type(exc).__name__}")
        return replace(_build(raw, Message(policy=POLICY), defects), tree=tree)


def _parse_tree(raw: bytes, defects: list[str]) -> Message:
    parser = BytesParser(policy=POLICY)
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
        return Message(policy=POLICY)


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
        text, html, attachments = split_body(tree, raw, defects)
    except Exception as exc:  # a bug of ours: keep what the headers say
        defects.append(f"body not read: {type(exc).__name__}")
        text, html, attachments = None, None, ()
    senders = read_from_field(tree, defects)
    ids = message_ids(tree.get("Message-ID"), defects)
    return ParsedMessage(
        raw=raw,
        message_id=ids[0] if ids else None,
        subject=header_text(tree.get("Subject", ""), defects).strip(),
        sender=senders.authors[0] if senders.authors else None,
        reply_to=addresses(tree, "Reply-To", defects),
        to=addresses(tree, "To", defects),
        cc=addresses(tree, "Cc", defects),
        date=date(tree.get("Date"), defects),
        in_reply_to=message_ids(tree.get("In-Reply-To"), defects),
        references=message_ids(tree.get("References"), defects),
        thread_index=unfolded_text(tree.get("Thread-Index", ""), defects).strip() or None,
        content_type=content_type(tree),
        text=text,
        html=html,
        attachments=attachments,
        headers=tuple((name.strip(), header_text(value, defects)) for name, value in tree.items()),
        defects=_collect_defects(tree, defects),
        tree=tree,
        authors=senders.authors,
        from_warning=senders.warning,
    )


def _collect_defects(tree: Message, defects: list[str]) -> tuple[str, ...]:
    """Our own defects, then the stdlib parser's, each named once."""
    found = list(defects)
    for part in tree.walk():
        found.extend(type(defect).__name__ for defect in getattr(part, "defects", ()))
    return tuple(dict.fromkeys(found))
