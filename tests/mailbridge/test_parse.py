"""Tests for the parse stage (mailbridge/pipeline/parse.py).

Small hand-written messages pin each rule down; the real-world corpus in
../shared/corpus proves that nothing breaks it, and Stalwart's mail-parser
expectations check that we read subjects, senders and file names right.
"""

from __future__ import annotations

import base64
import email
import importlib.util
import json
import mailbox
import re
from datetime import UTC, datetime
from email.policy import compat32
from pathlib import Path
from typing import Any

from mailbridge.message import Address, ParsedMessage
from mailbridge.pipeline.decoding import unfolded_text
from mailbridge.pipeline.fields import plain_address_pairs, strict_address_pairs
from mailbridge.pipeline.parse import parse_message

# Defects that mean our own code failed and a last-resort guard stepped in.
INTERNAL_FAILURES = ("parse failed", "body not read")


def _mixed(*parts: bytes, subtype: bytes = b"mixed", boundary: bytes = b"b1") -> bytes:
    """A multipart body with the given parts (each headers, blank line, body)."""
    body = b"".join(b"--" + boundary + b"\n" + part + b"\n" for part in parts)
    return (
        b"From: a@example.com\nContent-Type: multipart/"
        + subtype
        + b'; boundary="'
        + boundary
        + b'"\n\n'
        + body
        + b"--"
        + boundary
        + b"--\n"
    )


# Subjects and header text -------------------------------------------------


def test_it_decodes_rfc2047_subject() -> None:
    parsed = parse_message(b"Subject: =?utf-8?q?Caf=C3=A9?= =?iso-8859-1?b?4A==?= ok\n\n")

    assert parsed.subject == "Caféà ok"


def test_it_joins_a_character_split_across_encoded_words() -> None:
    # "é" is C3 A9 in UTF-8; a sloppy encoder put one byte in each word.
    parsed = parse_message(b"Subject: =?utf-8?q?caf=C3?=\n =?utf-8?q?=A9?=\n\n")

    assert parsed.subject == "café"
    assert parsed.defects == ()


def test_it_unfolds_and_strips_the_subject() -> None:
    parsed = parse_message(b"Subject:   a long\r\n  subject line  \r\n\r\nbody")

    assert parsed.subject == "a long  subject line"


def test_it_gives_an_empty_subject_when_absent() -> None:
    assert parse_message(b"From: a@example.com\n\nhi").subject == ""


def test_it_leaves_malformed_encoded_words_as_text() -> None:
    parsed = parse_message(b"Subject: =?utf-8?b?###?= and =?nope?q?x?=\n\n")

    assert parsed.subject == "=?utf-8?b?###?= and x"
    assert "unknown charset in encoded word: nope" in parsed.defects


def test_it_decodes_raw_utf8_headers() -> None:
    # RFC 6532 allows UTF-8 in headers without encoded words.
    parsed = parse_message("Subject: Säying Hello\nFrom: Jöhn <jdöe@example.com>\n\n".encode())

    assert parsed.subject == "Säying Hello"
    assert parsed.sender == Address("jdöe@example.com", "Jöhn")


def test_it_falls_back_to_cp1252_for_raw_8bit_headers() -> None:
    parsed = parse_message(b"Subject: Die Fr\xf6sche \x96 caf\xc3\xa9\n\n")

    assert parsed.subject == "Die Frösche – café"


def test_it_lists_all_top_level_headers_decoded_in_order() -> None:
    raw = b"X-A: 1\nSubject: =?utf-8?q?h=C3=A9?=\nX-A: 2\nX-Long: a\n b\n\nbody"

    parsed = parse_message(raw)

    assert parsed.headers == (("X-A", "1"), ("Subject", "hé"), ("X-A", "2"), ("X-Long", "a b"))
    assert parsed.header_all("x-a") == ["1", "2"]


def test_it_reads_headers_after_a_stray_line() -> None:
    raw = b"Received: by x\nnot a header\nFrom: a@example.com\nSubject: kept\n\nbody"

    parsed = parse_message(raw)

    assert parsed.subject == "kept"
    assert parsed.sender == Address("a@example.com")
    assert "stray line in header block" in parsed.defects


def test_it_accepts_white_space_before_the_colon() -> None:
    # RFC 5322 section 4.5.4 obsolete syntax.
    parsed = parse_message(b"From : a@example.com\nSubject  : hi\n\nbody")

    assert (parsed.subject, parsed.sender) == ("hi", Address("a@example.com"))


# Addresses ------------------------------------------------------------------


def test_it_lowercases_the_sender_and_decodes_the_name() -> None:
    parsed = parse_message(b"From: =?utf-8?q?J=C3=B6rg?= <Joerg@Example.COM>, b@example.com\n\n")

    assert parsed.sender == Address("joerg@example.com", "Jörg")


def test_it_keeps_a_name_without_an_address() -> None:
    assert parse_message(b"From: Whomever\n\n").sender == Address("", "Whomever")


def test_it_has_no_sender_without_from() -> None:
    assert parse_message(b"To: a@example.com\n\n").sender is None


def test_it_reads_old_style_comment_names() -> None:
    assert parse_message(b"From: bob@example.com (Bob Jones)\n\n").sender == Address(
        "bob@example.com", "Bob Jones"
    )


def test_it_lists_recipients() -> None:
    raw = (
        b'To: "Last, First" <LF@example.com>, group: c@example.com;\n'
        b"Cc: d@example.com\nCc: e@example.com\nReply-To: <r@example.com>\n\n"
    )

    parsed = parse_message(raw)

    assert parsed.to == (Address("lf@example.com", "Last, First"), Address("c@example.com"))
    assert parsed.cc == (Address("d@example.com"), Address("e@example.com"))
    assert parsed.reply_to == (Address("r@example.com"),)


def test_it_survives_garbage_addresses() -> None:
    raw = b"From: <<<@@@>>>\nTo: undisclosed-recipients:; (none)\nCc: " + b"(" * 5000 + b"\n\n"

    parsed = parse_message(raw)

    assert parsed.to == ()
    assert parsed.cc == ()


# Ids, dates, types -----------------------------------------------------------


def test_it_normalises_message_ids() -> None:
    raw = b"Message-ID:  < abc@example.com >\nIn-Reply-To: x@example.com (comment)\n\n"

    parsed = parse_message(raw)

    assert parsed.message_id == "abc@example.com"
    assert parsed.in_reply_to == ("x@example.com",)


def test_it_splits_references_in_order_without_duplicates() -> None:
    raw = b"References: <a@x> <b@x>\n\t<a@x>,<c@x> <b\n @x>\n\n"

    assert parse_message(raw).references == ("a@x", "b@x", "c@x")


def test_it_takes_unbracketed_references_word_by_word() -> None:
    assert parse_message(b"References: a@x b@x\n\n").references == ("a@x", "b@x")


def test_message_id_is_none_when_absent_or_empty() -> None:
    assert parse_message(b"Message-ID: <>\n\n").message_id is None
    assert parse_message(b"Subject: x\n\n").message_id is None


def test_it_converts_the_date_to_utc() -> None:
    parsed = parse_message(b"Date: Fri, 21 Nov 1997 09:55:06 -0600\n\n")

    assert parsed.date == datetime(1997, 11, 21, 15, 55, 6, tzinfo=UTC)


def test_it_reads_minus_zero_as_utc() -> None:
    parsed = parse_message(b"Date: Fri, 21 Nov 1997 09:55:06 -0000\n\n")

    assert parsed.date == datetime(1997, 11, 21, 9, 55, 6, tzinfo=UTC)


def test_it_gives_no_date_when_unparseable() -> None:
    parsed = parse_message(b"Date: Whenever\n\n")

    assert parsed.date is None
    assert "unparseable Date" in parsed.defects


def test_it_keeps_the_thread_index() -> None:
    assert parse_message(b"Thread-Index: AcQ1Yj3k\n\n").thread_index == "AcQ1Yj3k"
    assert parse_message(b"Subject: x\n\n").thread_index is None


def test_it_reports_the_top_level_content_type_in_lower_case() -> None:
    raw = b"Content-Type: Multipart/Report; report-type=delivery-status; boundary=x\n\n"

    assert parse_message(raw).content_type == "multipart/report"
    assert parse_message(b"Subject: x\n\nhi").content_type == "text/plain"


# Bodies -----------------------------------------------------------------------


def test_it_prefers_the_text_in_multipart_alternative() -> None:
    alternative = _mixed(
        b"Content-Type: text/plain\n\nplain",
        b"Content-Type: text/html\n\n<p>html</p>",
        subtype=b"alternative",
        boundary=b"b2",
    ).split(b"\n", 1)[1]
    raw = _mixed(b"Content-Type: text/html\n\n<p>footer</p>", alternative)

    parsed = parse_message(raw)

    # RFC 2046 section 5.1.1: the line break before a boundary belongs to it.
    assert parsed.text == "plain"
    assert parsed.html == "<p>html</p>"


def test_it_decodes_the_body_with_the_part_charset() -> None:
    raw = (
        b"Content-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nna=EFve =\ncaf=E9\r\n"
    )

    assert parse_message(raw).text == "naïve café\n"


def test_it_falls_back_when_the_charset_is_unknown() -> None:
    parsed = parse_message("Content-Type: text/plain; charset=x-unknown\n\nhé".encode())

    assert parsed.text == "hé"
    assert "unknown charset in body: x-unknown" in parsed.defects


def test_it_falls_back_when_the_charset_lies() -> None:
    ascii_label = parse_message(b"Content-Type: text/plain; charset=us-ascii\n\ncaf\xe9")
    latin_label = parse_message("Content-Type: text/plain; charset=latin1\n\ncafé".encode())

    assert ascii_label.text == "café"
    assert latin_label.text == "café"


def test_it_survives_nul_bytes() -> None:
    parsed = parse_message(b"Subject: a\x00b\nFrom: x\x00y@example.com\n\nbo\x00dy\x00")

    assert (parsed.subject, parsed.text) == ("ab", "body")
    assert parsed.sender == Address("xy@example.com")
    assert "NUL characters removed" in parsed.defects


def test_it_survives_empty_and_garbage_input() -> None:
    for raw in (b"", b"\n\n", b"\xff\xfe\x00" * 100, bytes(range(256)) * 20):
        parsed = parse_message(raw)

        assert parsed.raw == raw
        assert not _internal_failures(parsed)


def test_it_survives_a_missing_final_boundary() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nhi\n'

    assert parse_message(raw).text == "hi"


def test_it_recovers_a_boundary_after_a_missing_semicolon() -> None:
    raw = b'Content-Type: multipart/mixed\n boundary="b"\n\n--b\n\nhi\n--b--\n'

    parsed = parse_message(raw)

    assert parsed.text == "hi"
    assert "recovered unreadable multipart boundary" in parsed.defects


def test_it_survives_deep_nesting() -> None:
    raw = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (n, n) for n in range(3000)
    )

    assert not _internal_failures(parse_message(raw))


def test_it_keeps_the_raw_bytes_unchanged() -> None:
    raw = b"From : a@example.com\nstray\nSubject: x\n\nbody"

    assert parse_message(raw).raw == raw


# Attachments --------------------------------------------------------------------


def test_it_decodes_rfc2231_and_rfc2047_file_names() -> None:
    raw = _mixed(
        b"Content-Type: text/plain\nContent-Disposition: attachment;\n"
        b" filename*0*=utf-8''%E2%82%AC%20ra; filename*1=\"tes.txt\"\n\nx",
        b'Content-Type: application/pdf; name="=?utf-8?B?w6TDtsO8LnBkZg==?="\n\nx',
        b'Content-Type: image/png\nContent-Disposition: inline; filename="C:\\TEMP\\a.png"\n\nx',
    )

    names = [part.filename for part in parse_message(raw).attachments]

    # RFC 5322 quoted-pairs: a backslash quotes the next character.
    assert names == ["€ rates.txt", "äöü.pdf", "C:TEMPa.png"]


def test_it_decodes_attachment_content() -> None:
    raw = _mixed(
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        + base64.b64encode(b"\x00\x01binary")
    )

    (part,) = parse_message(raw).attachments

    assert part.data == b"\x00\x01binary"


def test_it_survives_bad_base64() -> None:
    raw = _mixed(b"Content-Type: image/png\nContent-Transfer-Encoding: base64 ;\n\nAAEC*Aw=\n=QQ")

    (part,) = parse_message(raw).attachments

    assert part.data == b"\x00\x01\x02\x03"


def test_it_generates_a_name_for_unnamed_parts() -> None:
    raw = _mixed(b"Content-Type: text/plain\n\nhi", b"Content-Type: image/png\n\nx")

    (part,) = parse_message(raw).attachments

    assert part.filename == "part-3.png"


def test_it_marks_referenced_cid_images_inline() -> None:
    raw = _mixed(
        b'Content-Type: text/html\n\n<img src="cid:logo@x">',
        b"Content-Type: image/png\nContent-ID: < logo@x >\n\nx",
        b"Content-Type: image/gif\nContent-ID: <other@x>\n\nx",
        subtype=b"related",
    )

    logo, other = parse_message(raw).attachments

    assert (logo.content_id, logo.inline) == ("logo@x", True)
    assert (other.content_id, other.inline) == ("other@x", False)


def test_it_keeps_a_forwarded_mail_as_one_eml_part() -> None:
    inner = b"From: c@example.com\nSubject: Re: A/B test\n\ninner body\n"
    raw = _mixed(
        b"Content-Type: text/plain\n\nsee below", b"Content-Type: message/rfc822\n\n" + inner
    )

    parsed = parse_message(raw)

    (part,) = parsed.attachments
    assert (part.content_type, part.filename) == ("message/rfc822", "Re: A_B test.eml")
    assert part.data == inner
    assert parsed.text == "see below"


def test_it_decodes_a_base64_forwarded_mail() -> None:
    inner = b"Subject: inner\r\n\r\nbody\r\n"
    raw = _mixed(
        b"Content-Type: message/rfc822\nContent-Disposition: attachment; filename=fw.eml\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.b64encode(inner)
    )

    (part,) = parse_message(raw).attachments

    assert (part.filename, part.data) == ("fw.eml", inner)


def test_it_keeps_delivery_status_parts_in_the_tree() -> None:
    raw = _mixed(
        b"Content-Type: text/plain\n\nYour mail could not be delivered.",
        b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
        b"Final-Recipient: rfc822; gone@example.com\nStatus: 5.1.1\n",
        b"Content-Type: text/rfc822-headers\n\nSubject: original",
        subtype=b"report; report-type=delivery-status",
    )

    parsed = parse_message(raw)

    assert parsed.content_type == "multipart/report"
    assert parsed.text == "Your mail could not be delivered."
    assert [part.content_type for part in parsed.attachments] == ["message/delivery-status"]
    assert b"Status: 5.1.1" in parsed.attachments[0].data
    assert parsed.tree is not None
    types = [part.get_content_type() for part in parsed.tree.walk()]
    assert "text/rfc822-headers" in types


# The real-world corpus ------------------------------------------------------------


def _internal_failures(parsed: ParsedMessage) -> list[str]:
    return [defect for defect in parsed.defects if defect.startswith(INTERNAL_FAILURES)]


def _unstorable(parsed: ParsedMessage) -> list[str]:
    """Output strings a database would refuse: NULs or lone surrogates."""
    texts = [parsed.subject, parsed.text or "", parsed.html or "", *parsed.references]
    texts += [value for header in parsed.headers for value in header]
    for address in (parsed.sender, *parsed.to, *parsed.cc, *parsed.reply_to):
        texts += [address.email, address.name] if address else []
    texts += [part.filename for part in parsed.attachments]
    return [text[:60] for text in texts if "\x00" in text or re.search("[\ud800-\udfff]", text)]


def _corpus_messages(corpus: Path) -> list[Path]:
    """Every message file in the MIME and bounce corpora (mboxes excluded)."""
    not_messages = re.compile(r"(LICENSE|README|COPYING|summary)", re.IGNORECASE)
    found = set((corpus / "mime").rglob("*.eml"))
    for folder in ("mikel/emails", "flanker/messages", "spamscope/mails", "mimekit/messages"):
        for path in (corpus / "mime" / folder).rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                found.add(path)
    found.update((corpus / "bounces" / "flufl").glob("*"))
    skipped_suffixes = {".json", ".tsv", ".png", ".wav"}
    return sorted(
        path
        for path in found
        if path.suffix not in skipped_suffixes and not not_messages.search(path.name)
    )


def _cpython_messages() -> list[Path]:
    """CPython's own email test messages, when the `test` package is installed."""
    spec = importlib.util.find_spec("test.test_email")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "data").glob("msg_*.txt"))


def test_every_corpus_message_parses(corpus: Path) -> None:
    paths = _corpus_messages(corpus) + _cpython_messages()
    failures: list[str] = []
    for path in paths:
        try:
            parsed = parse_message(path.read_bytes())
        except Exception as exc:
            failures.append(f"{path}: raised {exc!r}")
            continue
        problems = _internal_failures(parsed) + _unstorable(parsed)
        if problems:
            failures.append(f"{path}: {problems}")

    assert len(paths) > 400
    assert not failures, "\n".join(failures)


def _address_headers(corpus: Path) -> list[str]:
    """Every From/To/Cc/Reply-To value in the corpus, unfolded as `fields` reads it."""
    sources = [path.read_bytes() for path in _corpus_messages(corpus)]
    sources += [path.read_bytes() for path in (corpus / "threading" / "lkml" / "cur").iterdir()]
    archive = corpus / "threading" / "fedora" / "fedora-devel-mailman" / "2010-January.txt"
    sources += [bytes(message) for message in mailbox.mbox(archive)]
    values = []
    for data in sources:
        tree = email.message_from_bytes(data, policy=compat32)
        for name in ("From", "To", "Cc", "Reply-To"):
            values += [unfolded_text(value, []) for value in tree.get_all(name) or []]
    return values


def test_plain_address_lists_read_directly_agree_with_the_strict_parser(corpus: Path) -> None:
    compared, disagreements = 0, []
    for text in _address_headers(corpus):
        plain = plain_address_pairs(text)
        if plain is None:
            continue
        compared += 1
        strict = strict_address_pairs(text, [])
        if plain != strict:
            disagreements.append(f"{text!r}: {plain} != {strict}")
    assert compared > 500, "the corpus has hundreds of plain address headers"
    assert not disagreements, "\n".join(disagreements)


# Agreement with Stalwart's mail-parser ------------------------------------------------


def _stalwart_header(part: dict[str, Any], name: str) -> Any:
    return next((header["value"] for header in part["headers"] if header["name"] == name), None)


def _stalwart_params(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or "ContentType" not in value:
        return {}
    attributes = value["ContentType"]["attributes"] or []
    return {attribute["name"].lower(): attribute["value"] for attribute in attributes}


def _stalwart_sender(value: Any) -> str:
    if not isinstance(value, dict) or "Address" not in value:
        return ""
    found = value["Address"]
    mailboxes = found.get("List") or [
        mailbox for group in found.get("Group") or [] for mailbox in group["addresses"]
    ]
    return (mailboxes[0]["address"] or "").lower() if mailboxes else ""


def _stalwart_type(value: Any) -> str:
    """The first word of a Content-Type or Content-Disposition ('' if none)."""
    if not isinstance(value, dict) or "ContentType" not in value:
        return ""
    return str(value["ContentType"]["c_type"]).lower()


def _stalwart_attachment_names(expected: dict[str, Any]) -> list[str | None]:
    """File names of Stalwart's attachments that our rule also counts.

    Stalwart lists unnamed inline text parts (a second text/plain, a
    text/enriched) as attachments too; our rule keeps a part when it has a
    file name, an attachment disposition, or a type that is not text.
    """
    names: list[str | None] = []
    for index in expected["attachments"]:
        part = expected["parts"][index]
        ctype = _stalwart_header(part, "content_type")
        disposition = _stalwart_header(part, "content_disposition")
        name = _stalwart_params(disposition).get("filename") or _stalwart_params(ctype).get("name")
        # Without a Content-Type a digest's parts are mail, others text.
        is_mail = isinstance(part["body"], dict) and "Message" in part["body"]
        maintype = _stalwart_type(ctype) or ("message" if is_mail else "text")
        attached = _stalwart_type(disposition) == "attachment"
        if name or attached or maintype not in ("text", "multipart"):
            names.append(name)
    return names


def _agrees(expected: str | None, ours: str, fffd_matches: list[str]) -> bool:
    """Equal after white space folding, with two genuine equivalences.

    A null Stalwart name means "the sender gave none", as our generated
    `part-N.ext` and `<subject>.eml` names do. Stalwart turns an 8-bit byte
    it cannot decode into U+FFFD where we fall back to cp1252, so U+FFFD
    matches any one non-ASCII character (noted in `fffd_matches`).
    """
    if expected is None:
        return re.fullmatch(r"part-\d+\.[\w-]+|.+\.eml", ours) is not None
    expected, ours = " ".join(expected.split()), " ".join(ours.split())
    if expected == ours:
        return True
    if "\ufffd" not in expected or len(expected) != len(ours):
        return False
    pairs = zip(expected, ours, strict=True)
    if all(e == o or (e == "\ufffd" and not o.isascii()) for e, o in pairs):
        fffd_matches.append(ours)
        return True
    return False


def _stalwart_misses(eml: Path, expected: dict[str, Any], fffd_matches: list[str]) -> list[str]:
    """Where we differ from Stalwart on one message: subject, sender, names."""
    top = expected["parts"][0]
    parsed = parse_message(eml.read_bytes())
    subject = _stalwart_header(top, "subject")
    fields: dict[str, tuple[list[str | None], list[str]]] = {
        "subject": (
            [subject.get("Text", "") if isinstance(subject, dict) else ""],
            [parsed.subject],
        ),
        "sender": (
            [_stalwart_sender(_stalwart_header(top, "from"))],
            [parsed.sender.email if parsed.sender else ""],
        ),
        "file names": (
            _stalwart_attachment_names(expected),
            [part.filename for part in parsed.attachments],
        ),
    }
    misses = []
    for field, (theirs, ours) in fields.items():
        same = len(theirs) == len(ours) and all(
            _agrees(t, o, fffd_matches) for t, o in zip(theirs, ours, strict=True)
        )
        if not same:
            shown = (theirs, ours) if field == "file names" else (theirs[0], ours[0])
            misses.append(f"{eml} {field}: stalwart={shown[0]!r} ours={shown[1]!r}")
    return misses


def test_it_agrees_with_stalwart_on_subject_sender_and_file_names(corpus: Path) -> None:
    folder = corpus / "mime" / "stalwart" / "eml"
    expectations = [p for p in sorted(folder.glob("*/*.json")) if ".crlf." not in p.name]
    misses: list[str] = []
    fffd_matches: list[str] = []
    agreed = 0
    for path in expectations:
        expected = json.loads(path.read_text(encoding="utf-8"))
        found = _stalwart_misses(path.with_suffix(".eml"), expected, fffd_matches)
        misses += [miss.replace(f"{folder}/", "") for miss in found]
        agreed += not found

    percent = 100 * agreed / len(expectations)
    figure = f"Stalwart agreement: {agreed}/{len(expectations)} messages = {percent:.2f}%"
    print(f"\n{figure} ({len(fffd_matches)} values matched through U+FFFD)")
    print("\n".join(misses))
    assert len(expectations) >= 100
    assert percent >= 95, figure + "\n" + "\n".join(misses)
