"""Tests for mailbridge.threader: unit cases and real list traffic from the corpus."""

from __future__ import annotations

import base64
import email.policy
import json
import mailbox
import re
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from mailbridge.threader import (
    ThreadInput,
    ThreadNode,
    is_reply_subject,
    normalize_subject,
    parse_thread_index,
    references_chain,
    thread_messages,
)

JWZ_CASES = Path(__file__).resolve().parents[3] / "shared/corpus/threading/jwz_cases.json"
MSG_ID = re.compile(r"<[^<>]+>")
PARSER = BytesParser(policy=email.policy.default)

Tree = list[Any]  # [message_id_or_None, [children...]], as in jwz_cases.json


def as_tree(node: ThreadNode) -> Tree:
    return [node.message_id, [as_tree(child) for child in node.children]]


def make_input(message_id: str, subject: str = "", *references: str) -> ThreadInput:
    return ThreadInput(message_id, subject or message_id, references)


def header_ids(message: EmailMessage, name: str) -> list[str]:
    return [found for value in message.get_all(name, []) for found in MSG_ID.findall(str(value))]


def to_input(message: EmailMessage) -> ThreadInput:
    """What the DB stage will do: own id, decoded subject, RFC 5322 ancestor chain."""
    own = header_ids(message, "Message-ID")[0].strip("<>")
    chain = references_chain(
        header_ids(message, "In-Reply-To"), header_ids(message, "References"), message_id=own
    )
    return ThreadInput(own, str(message.get("Subject", "")), tuple(chain))


# --- normalize_subject / is_reply_subject -------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: topic", "topic"),
        ("RE: RE: Topic", "topic"),
        ("re[2]: topic", "topic"),
        ("Re^2: topic", "topic"),
        ("Re(3): topic", "topic"),
        ("Re : sujet", "sujet"),  # French typography: space before the colon
        ("AW: Thema", "thema"),
        ("WG: AW: Thema", "thema"),
        ("SV: Ämne", "ämne"),
        ("VS: aihe", "aihe"),
        ("Antw: onderwerp", "onderwerp"),
        ("Réf. : sujet", "sujet"),
        ("TR: Réf.: sujet", "sujet"),
        ("RIF: oggetto", "oggetto"),
        ("R: R: oggetto", "oggetto"),
        ("RV: asunto", "asunto"),
        ("Enc: assunto", "assunto"),
        ("Odp: temat", "temat"),
        ("回复：主题", "主题"),
        ("Fwd: Fw: FW: news", "news"),
        ("Re: Fwd: Re: AW: SV: mixed", "mixed"),
        ("[fedora-devel] Re: topic", "topic"),
        ("Re: [fedora-devel] Re: topic", "topic"),
        ("[Eng] Re: [list] RE:  Build   broken  ", "build broken"),
        ("Straße", "strasse"),
        ("old news (fwd)", "old news"),
        ("Regarding: the plan", "regarding: the plan"),
        ("RFC: spec", "rfc: spec"),
        ("Tracking bug", "tracking bug"),
        ("Enclosed: files", "enclosed: files"),
        ("Re:", ""),
        ("", ""),
    ],
)
def test_normalize_subject_strips_prefixes_and_tags(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: x", True),
        ("AW: x", True),
        ("Fwd: x", True),
        ("[list] Re: x", True),
        ("x (fwd)", True),
        ("[list] x", False),
        ("x", False),
        ("Regarding x", False),
    ],
)
def test_is_reply_subject_sees_prefixes_not_tags(subject: str, expected: bool) -> None:
    assert is_reply_subject(subject) is expected


# --- references_chain ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_reply_to", "references", "expected"),
    [
        ([], [], []),
        (["<a@x>"], [], ["a@x"]),
        ([], ["<a@x>", "<b@x>"], ["a@x", "b@x"]),
        (["<b@x>"], ["<a@x>", "<b@x>"], ["a@x", "b@x"]),
        # References trimmed by the client: In-Reply-To still names the parent.
        (["<c@x>"], ["<a@x>", "<b@x>"], ["a@x", "b@x", "c@x"]),
        # In-Reply-To names an earlier ancestor: cut there, invent nothing.
        (["<a@x>"], ["<a@x>", "<b@x>"], ["a@x"]),
        # Several parents (RFC 5322 allows it): References ending with one is kept.
        (["<z@x>", "<b@x>"], ["<a@x>", "<b@x>"], ["a@x", "b@x"]),
        ([], ["<a@x>", "<b@x>", "<a@x>"], ["a@x", "b@x"]),
        ([" a@x "], [], ["a@x"]),
    ],
)
def test_references_chain_follows_rfc5322(
    in_reply_to: list[str], references: list[str], expected: list[str]
) -> None:
    assert references_chain(in_reply_to, references) == expected


def test_references_chain_drops_self_references() -> None:
    chain = references_chain(["<m@x>"], ["<a@x>", "<m@x>"], message_id="<m@x>")
    assert chain == ["a@x"]


# --- parse_thread_index -------------------------------------------------------------


def thread_index_header() -> bytes:
    # Reserved 0x01, the top 5 bytes of a FILETIME, then the conversation GUID.
    return b"\x01" + bytes.fromhex("01d3a1b2c3") + uuid.UUID(int=0x1234).bytes


def test_parse_thread_index_reads_key_and_depth() -> None:
    header = thread_index_header()
    levels = bytes.fromhex("0000012345") + bytes.fromhex("8000067890")
    value = base64.b64encode(header + levels).decode()
    assert parse_thread_index(value) == (header, 2)


def test_parse_thread_index_keeps_the_key_across_replies() -> None:
    header = thread_index_header()
    start = parse_thread_index(base64.b64encode(header).decode())
    reply = parse_thread_index(base64.b64encode(header + b"\0\0\0\1\2").decode())
    assert start == (header, 0)
    assert reply == (header, 1)


def test_parse_thread_index_accepts_folding_and_missing_padding() -> None:
    header = thread_index_header()
    value = base64.b64encode(header).decode().rstrip("=")
    assert parse_thread_index(value[:10] + "\r\n " + value[10:]) == (header, 0)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64 at all!",
        base64.b64encode(b"\x01" * 10).decode(),  # shorter than the header
        base64.b64encode(b"\x01" * 25).decode(),  # a partial reply block
    ],
)
def test_parse_thread_index_rejects_malformed_values(value: str) -> None:
    assert parse_thread_index(value) is None


# --- thread_messages: JWZ edge cases ----------------------------------------------


def load_jwz_cases() -> list[dict[str, Any]]:
    if not JWZ_CASES.is_file():
        return []
    cases: list[dict[str, Any]] = json.loads(JWZ_CASES.read_text())["cases"]
    return cases


def check_lying_message(roots: list[ThreadNode]) -> None:
    # The case's "asserted": roots[1] is First; First -> Second -> Third.
    first = roots[1]
    assert first.message_id == "First"
    assert [child.message_id for child in first.children] == ["Second"]
    second = first.children[0]
    assert [child.message_id for child in second.children] == ["Third"]


# Cases without a "tree" assert only part of the result upstream.
PARTIAL_CHECKS = {"thread_lying_message": check_lying_message}


@pytest.mark.parametrize("case", load_jwz_cases(), ids=lambda case: case["name"].split()[0])
def test_jwz_case(corpus: Path, case: dict[str, Any]) -> None:
    messages = [
        ThreadInput(m["id"], m["subject"], tuple(m["references"])) for m in case["messages"]
    ]
    roots = thread_messages(messages, group_by_subject=case["group_by_subject"])
    ids = [node_id for root in roots for node_id in root.message_ids()]
    assert sorted(ids) == sorted(m.message_id for m in messages)  # each once, no loops
    if "tree" in case:
        assert [as_tree(root) for root in roots] == case["tree"]
    else:
        PARTIAL_CHECKS[case["name"].split()[0]](roots)


def test_jwz_cases_are_all_collected(corpus: Path) -> None:
    assert len(load_jwz_cases()) == 6


def test_thread_messages_never_makes_a_loop() -> None:
    messages = [make_input("a", "", "b"), make_input("b", "", "a"), make_input("c", "", "c")]
    roots = thread_messages(messages, group_by_subject=False)
    assert [as_tree(root) for root in roots] == [["b", [["a", []]]], ["c", []]]


def test_thread_messages_ignores_a_repeated_message_id() -> None:
    messages = [make_input("a"), make_input("b", "", "a"), make_input("a", "", "b")]
    roots = thread_messages(messages, group_by_subject=False)
    assert [as_tree(root) for root in roots] == [["a", [["b", []]]]]


def test_thread_messages_prunes_dummies_between_messages() -> None:
    messages = [make_input("a"), make_input("c", "", "a", "missing")]
    roots = thread_messages(messages, group_by_subject=False)
    assert [as_tree(root) for root in roots] == [["a", [["c", []]]]]


def test_subject_grouping_puts_replies_under_the_original() -> None:
    messages = [make_input("r", "Re: [list] Plans"), make_input("o", "Plans")]
    roots = thread_messages(messages)
    assert [as_tree(root) for root in roots] == [["o", [["r", []]]]]


def test_subject_grouping_joins_equal_subjects_under_a_dummy() -> None:
    messages = [make_input("a", "Hello"), make_input("b", "hello")]
    assert [as_tree(root) for root in thread_messages(messages)] == [[None, [["a", []], ["b", []]]]]
    assert len(thread_messages(messages, group_by_subject=False)) == 2


# --- thread_messages: a month of fedora-devel ---------------------------------------


@pytest.fixture(scope="module")
def fedora(corpus: Path) -> tuple[list[ThreadInput], list[dict[str, Any]]]:
    """The month's messages as ThreadInputs, in mbox order, and the archive's threads."""
    folder = corpus / "threading" / "fedora"
    box = mailbox.mbox(folder / "fedora-devel-mailman" / "2010-January.txt", create=False)
    try:
        parsed = [PARSER.parsebytes(box.get_bytes(key)) for key in box.iterkeys()]
    finally:
        box.close()
    inputs = [to_input(message) for message in parsed if isinstance(message, EmailMessage)]
    threads: list[dict[str, Any]] = json.loads((folder / "expected_threads.json").read_text())[
        "threads"
    ]
    return inputs, threads


def walk_expected(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node["children"]:
        yield from walk_expected(child)


def expected_sets(threads: list[dict[str, Any]]) -> set[frozenset[str]]:
    return {frozenset(n["message_id"].strip("<>") for n in walk_expected(t)) for t in threads}


def our_sets(roots: list[ThreadNode]) -> set[frozenset[str]]:
    return {frozenset(root.message_ids()) for root in roots}


def test_fedora_expected_threads_cover_the_mbox_once(
    fedora: tuple[list[ThreadInput], list[dict[str, Any]]],
) -> None:
    inputs, threads = fedora
    nodes = [node for thread in threads for node in walk_expected(thread)]
    assert len(inputs) == 292
    assert sorted(node["msg"] for node in nodes) == list(range(292))
    for node in nodes:
        assert inputs[node["msg"]].message_id == node["message_id"].strip("<>")


def test_fedora_month_threads_like_the_archive(
    fedora: tuple[list[ThreadInput], list[dict[str, Any]]],
) -> None:
    inputs, threads = fedora
    roots = thread_messages(inputs, group_by_subject=True)
    assert len(roots) == 60
    assert our_sets(roots) == expected_sets(threads)


def test_fedora_month_needs_subject_grouping_for_one_thread(
    fedora: tuple[list[ThreadInput], list[dict[str, Any]]],
) -> None:
    # Without step 5, "Common Lisp apps in Fedora" falls into three pieces:
    # msg 153 was sent with no In-Reply-To/References (248 answers it), and
    # msg 285 answers a message missing from the archive. Nothing else moves.
    inputs, threads = fedora
    roots = thread_messages(inputs, group_by_subject=False)
    ours, expected = our_sets(roots), expected_sets(threads)

    def by_index(*indices: int) -> frozenset[str]:
        return frozenset(inputs[i].message_id for i in indices)

    common_lisp = by_index(55, 57, 69, 124, 135, 153, 248, 249, 263, 277, 279, 285)
    assert len(roots) == 62
    assert expected - ours == {common_lisp}
    assert ours - expected == {
        common_lisp - by_index(153, 248, 285),
        by_index(153, 248),
        by_index(285),
    }


# --- thread_messages: an LKML Maildir slice -----------------------------------------


def test_lkml_slice_has_seven_threads(corpus: Path) -> None:
    files = sorted((corpus / "threading" / "lkml" / "cur").iterdir())
    unique: dict[str, ThreadInput] = {}
    for path in files:
        message = PARSER.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        found = to_input(message)
        unique.setdefault(found.message_id, found)
    assert len(files) == 210
    assert len(unique) == 176
    for group in (True, False):
        roots = thread_messages(unique.values(), group_by_subject=group)
        assert len(roots) == 7
        assert sum(len(root.message_ids()) for root in roots) == 176
