"""Reply trimming: show only what the person wrote, keep the rest as elided text.

A reply from Gmail, Outlook, Apple Mail or a phone carries the message it
answers ("On ... wrote:" and a quote, an Outlook "From: / Sent:" block), a
mobile signature and often a "-- " signature. The feed shows what is left;
what was cut is returned as `elided`, never thrown away.

The design follows Discourse's email_reply_trimmer: every line gets a kind
(blank, delimiter, "-- ", mobile signature, reply header, forward marker,
quote, text), headers that clients wrap over several lines become one block, and
the cuts are decided on the string of kinds. The rules are our own and lean
towards showing: losing what someone wrote is worse than showing a quote.
Forwarded mail is kept whole, because there the forwarded text is the point.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

# One letter per kind, so the cut rules can be written as patterns.
_EMPTY, _DELIMITER, _SEPARATOR, _SIGNATURE, _HEADER, _FORWARD, _QUOTE, _TEXT = "edpshfqt"

_MAX_HEADER_LINES = 5  # clients wrap "On ... wrote:" over at most this many lines
_MIN_REPLY_LINES = 3  # fewer lines after a quote read as the quoted sender's signature
_MAX_SIGNATURE_LINES = 4  # text after a delimiter that may still be a signature

_QUOTED_LINE = re.compile(r"\s*(?:>|\|(?!.*\|\s*$)|[A-Za-z]{1,12}>(?=\s|$))")
_QUOTE_PREFIX = re.compile(r"(?:\s*[>|])+\s?")
_FENCE = re.compile(r"\s*```")
_DELIMITER_LINE = re.compile(r"\s*(?:[-_=*#~+]{2,}|\u1427)\s*")
_SIGNATURE_SEPARATOR = re.compile(r"-- ?")
_MOBILE_SIGNATURE = re.compile(
    r"\s*(?:"
    r"[(<\[]*\s*sent (?:from|via|with|by|using) .{1,100}"
    r"|from my (?:i?phone|ipad|mobile|android|cell|samsung|galaxy|blackberry|tablet)\b.{0,30}"
    r"|\w+ from (?:my )?(?:mobile|phone)\W*"
    r"|get \[?outlook for .{1,60}"
    r"|envoy[ée] (?:de|depuis) (?:mon|ma) .{1,60}"
    r"|(?:von|mit) meine[mr] .{1,60} gesendet\.?"
    r"|gesendet (?:von|mit) .{1,60}"
    r"|diese nachricht wurde von meinem .{1,80} gesendet\.?"
    r"|enviado (?:desde|de|do) (?:mi|meu) .{1,60}"
    r"|inviato da(?:l mio)? .{1,60}"
    r"|(?:sendt|skickat) fr[aå]n? (?:min|mitt) .{1,60}"
    r"|verzonden (?:met|vanaf|van) .{1,60}"
    r"|wys[łl]ane z .{1,60}"
    r"|отправлено с .{1,60}"
    r"|(?:從|从)我的.{1,30}(?:傳送|发送)|寄自我的.{1,30}"
    r")\s*",
    re.IGNORECASE,
)
_ORIGINAL_MESSAGE = re.compile(
    r"[\s*_]*-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine"
    r"|mensaje original|messaggio originale|oorspronkelijk bericht|originalmeddelande"
    r"|opprinnelig melding|alkuperäinen viesti|wiadomość oryginalna|исходное сообщение"
    r"|mensagem original)\s*-{2,}[\s*_]*",
    re.IGNORECASE,
)
_FORWARD_MARKER = re.compile(
    r"[\s*_]*(?:-{2,}\s*(?:forwarded message|message transféré|weitergeleitete nachricht"
    r"|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht|mensagem encaminhada"
    r"|vidarebefordrat meddelande|videresendt melding|пересылаемое сообщение"
    r"|wiadomość przekazana dalej)\s*-{2,}"
    r"|(?:begin forwarded message|début du message réexpédié"
    r"|anfang der weitergeleiteten nachricht|inicio del mensaje reenviado"
    r"|inizio messaggio inoltrato)\s*:)[\s*_]*",
    re.IGNORECASE,
)

# "On <date>, X wrote:" in many languages: the last verb, then nothing or a colon.
_VERB = re.compile(
    r"(?<!\w)(?:wrote|a écrit|schrieb|escribió|escreveu|ha scritto|skrev|schreef"
    r"|geschreven|napisał\(a\)|napisała?|написала?|написали|пише|написав|kirjoitti"
    r"|yazdı|írta)(?!\w)|写道|寫道"
)
_VERB_TAIL = re.compile(r"\s*-*\s*|[^:：]{0,80}[:：]\s*")
_TAIL_NOISE = re.compile(r"mailto:|(?<=\d):(?=\d)")  # colons that do not end a header
_ADDRESS = re.compile(r"<[^<>]*@|&lt;|mailto:")
_DATE = re.compile(
    r"\d{1,2}[:.h]\d{2}(?!\d)|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
    r"|\b\d{1,2}\b.*\b\d{4}\b|\b\d{4}\b.*\b\d{1,2}\b"
)
# Gmail's older headers carry no verb: "2016-03-03 17:21 GMT+01:00 Name".
_DATED_HEADER = re.compile(
    r"\d{4}[-/]\d{1,2}[-/]\d{1,2}\s+"
    r"(?:\d{1,2}:\d{2}\s*GMT[+-]\d{1,2}:?\d{2}\s+\S.*|.*<[^<>\s]+@[^<>\s]+>\s*:?)"
)
_DATED_START = re.compile(r"\d{4}[-/]\d{1,2}[-/]\d{1,2}\s")
# A wrapped header must start like one, and not where a sentence ends.
_HEADER_OPENER = re.compile(
    r"\s*(?:-+\s*)?(?:(?:On|Le|Am|El|Em|Il|Den|Dnia|Op|At|W dniu)\s|\d|[^<>@:]{1,60}<\S*@)"
)
_SENTENCE_END = re.compile(r".*(?:[^\W\d]\.|[!?])\s*")

# Outlook-style header blocks: a "From:" line followed by other fields.
_FIELD = re.compile(r"[\s*_]*([^\W\d_][\w-]*(?: [\w-]+)?)[\s*_]*[:：][\s*_]*")
# Word tables read better packed than one word per line.
# fmt: off
_FROM_FIELDS = frozenset({
    "from", "von", "de", "da", "från", "van", "fra", "od", "от", "lähettäjä", "feladó",
    "发件人", "寄件者", "差出人",
})
_SUBJECT_FIELDS = frozenset({
    "subject", "betreff", "objet", "asunto", "oggetto", "ämne", "onderwerp", "assunto",
    "emne", "temat", "тема",
})
_OTHER_FIELDS = _SUBJECT_FIELDS | frozenset({
    "sent", "date", "to", "cc", "reply-to", "gesendet", "datum", "an", "kopie", "envoyé",
    "à", "enviado", "enviada", "fecha", "para", "inviato", "data", "a", "risposta",
    "skickat", "till", "verzonden", "aan", "sendt", "til", "wysłano", "do", "отправлено", "кому",
})
# fmt: on
_FORWARD_SUBJECT = re.compile(r"(?:fwd?|wg|tr|rv|i|vs|doorst|enc)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class TrimmedReply:
    """What the feed shows, and what was cut from it ('' if nothing)."""

    shown: str
    elided: str


@dataclass(frozen=True)
class _Block:
    """Consecutive lines [first, end) of one kind; most blocks are one line."""

    kind: str
    first: int
    end: int


def trim_reply(text: str) -> TrimmedReply:
    """Split a reply into the text to show and the quoted history to elide."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    whole = _tidy(lines)
    blocks = _classify(lines)
    kinds = "".join(block.kind for block in blocks)
    first_marker = re.search(f"[{_HEADER}{_FORWARD}]", kinds)
    if first_marker and first_marker.group() == _FORWARD:
        return TrimmedReply(shown=whole, elided="")
    keep = _select(kinds)
    shown = _tidy(
        [ln for b, k in zip(blocks, keep, strict=True) if k for ln in lines[b.first : b.end]]
    )
    if not shown:
        return TrimmedReply(shown=whole, elided="")
    return TrimmedReply(shown=shown, elided=_elided(lines, blocks, keep))


def _tidy(lines: list[str]) -> str:
    """Join lines, dropping blank lines at the start and white space at the end."""
    return re.sub(r"\A(?:[ \t]*\n)+", "", "\n".join(lines)).rstrip()


def _elided(lines: list[str], blocks: list[_Block], keep: list[bool]) -> str:
    """The cut lines, verbatim, one tidied stretch after another."""
    stretches: list[list[str]] = [[]]
    for block, kept in zip(blocks, keep, strict=True):
        if kept:
            stretches.append([])
        else:
            stretches[-1].extend(lines[block.first : block.end])
    return "\n".join(t for t in (_tidy(s) for s in stretches) if t)


def _classify(lines: list[str]) -> list[_Block]:
    """Give every line a kind, merging multi-line headers into one block."""
    fenced = _fenced(lines)
    spans = _field_blocks(lines, fenced)
    spans.update(_reply_headers(lines, fenced, spans))
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        end, kind = spans.get(i, (i + 1, ""))
        blocks.append(_Block(kind or _line_kind(lines[i], fenced[i]), i, end))
        i = end
    return blocks


def _fenced(lines: list[str]) -> list[bool]:
    """Which lines belong to a ``` code block (always text, never cut)."""
    inside, result = False, []
    for line in lines:
        fence = bool(_FENCE.match(line))
        result.append(inside or fence)
        inside ^= fence
    return result


def _line_kind(line: str, fenced: bool) -> str:
    """The kind of a single line outside any multi-line header."""
    if fenced:
        return _TEXT
    if not line.strip():
        return _EMPTY
    if _may_mark_forward(line) and _FORWARD_MARKER.fullmatch(_unquoted(line)):
        return _FORWARD
    if _ORIGINAL_MESSAGE.fullmatch(line):
        return _HEADER
    if _QUOTED_LINE.match(line):
        return _QUOTE
    if _SIGNATURE_SEPARATOR.fullmatch(line):
        return _SEPARATOR
    if _DELIMITER_LINE.fullmatch(line):
        return _DELIMITER
    if _MOBILE_SIGNATURE.fullmatch(line):
        return _SIGNATURE
    return _TEXT


def _may_mark_forward(line: str) -> bool:
    # Every forward marker has dashes or a colon; most lines have neither,
    # and the checks below are the costliest per line.
    return "-" in line or ":" in line


def _unquoted(line: str) -> str:
    # The prefix needs a '>' or '|': skip the search (a scan of the whole
    # line) when there is none.
    return _QUOTE_PREFIX.sub("", line, count=1) if ">" in line or "|" in line else line


def _field_blocks(lines: list[str], fenced: list[bool]) -> dict[int, tuple[int, str]]:
    """Outlook header blocks ("From:" and two more fields), keyed by first line."""
    spans: dict[int, tuple[int, str]] = {}
    i = 0
    while i < len(lines):
        found = None if fenced[i] else _field_block_at(lines, i)
        if found is None:
            i += 1
            continue
        spans[i] = found
        i = found[0]
    return spans


def _field_block_at(lines: list[str], start: int) -> tuple[int, str] | None:
    """The end and kind of a header block starting at `start`, if one does."""
    match = _FIELD.match(lines[start])
    if not match or match.group(1).casefold() not in _FROM_FIELDS:
        return None
    fields, forward, wrapped, i = 1, False, False, start + 1
    while i < len(lines) and lines[i].strip():
        match = _FIELD.match(lines[i])
        name = match.group(1).casefold() if match else ""
        if match and name in _OTHER_FIELDS:
            fields += 1
            rest = lines[i][match.end() :]
            forward |= name in _SUBJECT_FIELDS and bool(_FORWARD_SUBJECT.match(rest))
        elif wrapped:  # one wrapped value is normal; a second means body text
            break
        else:
            wrapped = True
        i += 1
    if fields < 3:
        return None
    return i, _FORWARD if forward else _HEADER


def _reply_headers(
    lines: list[str], fenced: list[bool], taken: dict[int, tuple[int, str]]
) -> dict[int, tuple[int, str]]:
    """Reply headers ("On ... wrote:"), possibly wrapped, keyed by their first line."""
    claimed = list(fenced)
    for first, (end, _) in taken.items():
        claimed[first:end] = [True] * (end - first)
    spans: dict[int, tuple[int, str]] = {}
    candidates = _header_candidates(lines)
    free = 0  # headers never overlap
    for end in range(len(lines)):
        if claimed[end]:
            free = end + 1
            continue
        start = max(free, end - _MAX_HEADER_LINES + 1)
        if not any(candidates[start : end + 1]):
            continue  # no verb and no date line nearby: cannot be a header
        for first in range(start, end + 1):
            if _is_reply_header(lines[first : end + 1]):  # longest span first
                spans[first] = (end + 1, _HEADER)
                free = end + 1
                break
    return spans


def _header_candidates(lines: list[str]) -> list[bool]:
    """Lines that hold part of a reply verb, or open a dated header.

    `_is_reply_header` needs one or the other in its window; finding them
    once over the whole text spares it the other windows (most of them).
    The text is joined as the windows are, so a verb wrapped over two lines
    marks both.
    """
    stripped = [line.strip() for line in lines]
    marks = [bool(_DATED_START.match(line)) for line in stripped]
    starts, offset = [], 0
    for line in stripped:
        starts.append(offset)
        offset += len(line) + 1
    for verb in _VERB.finditer(" ".join(stripped)):
        first = bisect.bisect_right(starts, verb.start()) - 1
        last = bisect.bisect_right(starts, verb.end() - 1) - 1
        marks[first : last + 1] = [True] * (last - first + 1)
    return marks


def _is_reply_header(lines: list[str]) -> bool:
    """Whether these lines, joined, are a reply header written by a mail client."""
    opener = lines[0]
    if _QUOTED_LINE.match(opener) or not opener.strip():
        return False
    if len(lines) > 1 and (not _HEADER_OPENER.match(opener) or _SENTENCE_END.fullmatch(opener)):
        return False
    joined = " ".join(line.strip() for line in lines)
    if len(joined) > 300 or joined.count("<") > joined.count(">"):
        return False
    if _DATED_HEADER.fullmatch(joined):
        return True
    verbs = list(_VERB.finditer(joined))
    if not verbs or not _VERB_TAIL.fullmatch(_TAIL_NOISE.sub("", joined[verbs[-1].end() :])):
        return False
    # A date or an address before the verb tells a header from "as I wrote:".
    prefix = joined[: verbs[-1].start()]
    return bool(_ADDRESS.search(prefix) or _DATE.search(prefix))


def _select(kinds: str) -> list[bool]:
    """Which blocks to show, decided on the string of kinds."""
    end = _cut_at_delimiter(kinds)
    start = _skip_leading_reply(kinds, end)
    end = _cut_at_reply_header(kinds, start, end)
    end = _trim_tail(kinds, start, end)
    return [start <= i < end and kind != _HEADER for i, kind in enumerate(kinds)]


def _cut_at_delimiter(kinds: str) -> int:
    """Cut at "-- ", or at a line of dashes that introduces a signature or quoted mail."""
    for found in re.finditer(f"[{_DELIMITER}{_SEPARATOR}]", kinds):
        i = found.start()
        rest = kinds[i + 1 :]
        if _TEXT not in kinds[:i]:
            continue
        if found.group() == _SEPARATOR or rest.count(_TEXT) <= _MAX_SIGNATURE_LINES:
            return i
        if re.search(f"[{_HEADER}{_FORWARD}{_QUOTE}{_SIGNATURE}{_DELIMITER}{_SEPARATOR}]", rest):
            return i
    return len(kinds)


def _skip_leading_reply(kinds: str, end: int) -> int:
    """Skip a header and quote that open a bottom-posted reply."""
    opening = re.match(f"{_EMPTY}*{_HEADER}[{_EMPTY}{_QUOTE}{_HEADER}{_SIGNATURE}]*", kinds[:end])
    if opening and _TEXT in kinds[opening.end() : end]:
        return opening.end()
    return 0


def _cut_at_reply_header(kinds: str, start: int, end: int) -> int:
    """Cut at the first reply header after the person's text, unless they answer below it."""
    for i in range(start, end):
        if (
            kinds[i] == _HEADER
            and _TEXT in kinds[start:i]
            and not _answers_below(kinds[i + 1 : end])
        ):
            return i
    return end


def _answers_below(after_header: str) -> bool:
    """Whether the person writes below a quoted header: between quotes, or at length."""
    body = after_header.lstrip(_EMPTY)
    if not body.startswith(_QUOTE):
        return False  # unprefixed history (Outlook, phones): all of it is quoted mail
    quoted = re.match(f"[{_EMPTY}{_QUOTE}{_HEADER}{_SIGNATURE}]*", body)
    below = body[quoted.end() :] if quoted else body
    return _QUOTE in below or below.count(_TEXT) >= _MIN_REPLY_LINES


def _trim_tail(kinds: str, start: int, end: int) -> int:
    """Drop trailing blanks, signatures, delimiters, headers and a closing quote."""
    while True:
        region = kinds[start:end]
        tail = re.search(f"[{_EMPTY}{_SIGNATURE}{_DELIMITER}{_SEPARATOR}{_HEADER}]+$", region)
        if tail is None:
            tail = re.search(f"{_QUOTE}[{_QUOTE}{_EMPTY}]*$", region)
            if tail is None or _TEXT not in region[: tail.start()]:
                return end
        end = start + tail.start()
