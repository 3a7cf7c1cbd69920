"""Tests for reply trimming: Discourse's email_reply_trimmer fixtures, then small cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbridge.trimming import TrimmedReply, trim_reply

FIXTURES = Path("trimming") / "email_reply_trimmer"
MIN_AGREEMENT = 0.90
# Where our brief and the fixtures disagree on purpose: forwards are kept
# whole (the fixtures cut them), and a message that would be trimmed to
# nothing is shown whole (spam_1 expects an empty result).
FORWARD_PHRASES = ("Forwarded message", "Begin forwarded message")
QUOTE_MARKS = re.compile(r"^(?:\s*>)+")


def normalise(text: str) -> str:
    """The comparison the figure uses: line endings and outer white space only."""
    return text.replace("\r\n", "\n").strip()


def stripped_lines(text: str) -> set[str]:
    """The non-blank lines of a text, without surrounding white space or quote marks."""
    lines = (QUOTE_MARKS.sub("", line).strip() for line in text.splitlines())
    return {line for line in lines if line}


def emails(corpus: Path) -> list[Path]:
    """Every input fixture, sorted by name."""
    return sorted((corpus / FIXTURES / "emails").glob("*.txt"))


def expected(corpus: Path, folder: str, email: Path) -> str | None:
    """The fixture in `folder` for this email, if there is one."""
    path = corpus / FIXTURES / folder / email.name
    return path.read_text(encoding="utf-8") if path.exists() else None


def read(email: Path) -> str:
    """An input fixture; read as bytes so CRLF line endings survive."""
    return email.read_bytes().decode("utf-8")


def test_it_agrees_with_the_trimmed_fixtures(corpus: Path) -> None:
    total, misses = 0, []
    for email in emails(corpus):
        want = expected(corpus, "trimmed", email)
        if want is None:
            continue
        total += 1
        if normalise(trim_reply(read(email)).shown) != normalise(want):
            misses.append(email.stem)
    hits = total - len(misses)
    figure = f"{hits}/{total} = {hits / total:.1%} trimmed fixtures agree; misses: {misses}"
    print(figure)
    assert total > 0
    assert hits / total >= MIN_AGREEMENT, figure


def test_it_elides_what_the_fixtures_elide(corpus: Path) -> None:
    total, exact, loose, misses = 0, 0, 0, []
    for email in emails(corpus):
        want = expected(corpus, "elided", email)
        if want is None:
            continue
        total += 1
        got = trim_reply(read(email)).elided
        if normalise(got) == normalise(want):
            exact += 1
        elif got.split() == want.split():  # the fixtures re-join wrapped headers
            loose += 1
        else:
            misses.append(email.stem)
        if not want.strip():
            assert not got, f"{email.stem}: nothing should be elided"
    print(
        f"elided: {exact}/{total} exact, {exact + loose}/{total} ignoring white space;"
        f" misses: {misses}"
    )
    assert total > 0


def test_it_never_loses_a_line(corpus: Path) -> None:
    for email in emails(corpus):
        text = read(email)
        result = trim_reply(text)
        kept = {line.strip() for line in (result.shown + "\n" + result.elided).splitlines()}
        lost = {line.strip() for line in text.splitlines() if line.strip()} - kept
        assert not lost, f"{email.stem} lost {sorted(lost)[:3]}"


def test_it_keeps_forwarded_mail_in_what_is_shown(corpus: Path) -> None:
    checked = 0
    for embedded in sorted((corpus / FIXTURES / "embedded").glob("*.txt")):
        text = read(corpus / FIXTURES / "emails" / embedded.name)
        result = trim_reply(text)
        before = expected(corpus, "before", embedded) or ""
        inner = stripped_lines(embedded.read_text(encoding="utf-8"))
        if any(phrase in text for phrase in FORWARD_PHRASES):
            checked += 1
            shown = stripped_lines(result.shown)
            assert inner <= shown, f"{embedded.stem}: forwarded text not shown"
            assert stripped_lines(before) <= shown, f"{embedded.stem}: preamble not shown"
        else:  # a reply embedding the previous mail, Outlook style: that part is cut
            assert inner <= stripped_lines(result.elided), embedded.stem
            assert before.splitlines()[0].strip() in result.shown, embedded.stem
    assert checked == 3


def test_it_cuts_a_gmail_header_and_quote() -> None:
    text = (
        "Sounds good.\n\n"
        "On Tue, Mar 5, 2024 at 10:12 AM Alice <alice@example.org> wrote:\n"
        "> Shall we meet?\n"
    )
    assert trim_reply(text) == TrimmedReply(
        shown="Sounds good.",
        elided="On Tue, Mar 5, 2024 at 10:12 AM Alice <alice@example.org> wrote:\n> Shall we meet?",
    )


def test_it_cuts_a_gmail_header_wrapped_over_two_lines() -> None:
    text = (
        "Sounds good.\n\nOn Tue, Mar 5, 2024 at 10:12 AM Alice <\nalice@example.org> wrote:\n\n> Hi"
    )
    result = trim_reply(text)
    assert result.shown == "Sounds good."
    assert result.elided.startswith("On Tue, Mar 5, 2024")


def test_it_keeps_an_answer_written_below_the_quote() -> None:
    text = "On Mon, 5 May 2024, Bob <bob@example.org> wrote:\n> Tuesday?\n\nYes, Tuesday works."
    assert trim_reply(text).shown == "Yes, Tuesday works."


@pytest.mark.parametrize(
    "history",
    [
        "-----Original Message-----\nFrom: Alice <alice@example.org>\n"
        "Sent: Tuesday, March 5, 2024 10:12 AM\nTo: Team\nSubject: Meeting\n\nShall we meet?",
        "De : Alice <alice@example.org>\nEnvoyé : mardi 5 mars 2024 10:12\n"
        "À : Équipe\nObjet : Réunion\n\nOn se voit ?",
        "-----Ursprüngliche Nachricht-----\nVon: Alice <alice@example.org>\n"
        "Gesendet: Dienstag, 5. März 2024 10:12\nAn: Team\nBetreff: Treffen\n\nTreffen wir uns?",
    ],
)
def test_it_cuts_an_outlook_original_message(history: str) -> None:
    assert trim_reply(f"Agreed.\n\n{history}") == TrimmedReply(shown="Agreed.", elided=history)


def test_it_cuts_a_dash_dash_space_signature() -> None:
    result = trim_reply("See you there.\n\n-- \nBob Example\nExample Corp\n")
    assert result == TrimmedReply(shown="See you there.", elided="-- \nBob Example\nExample Corp")


@pytest.mark.parametrize(
    "signature", ["Sent from my iPhone", "Envoyé de mon iPhone", "Von meinem iPhone gesendet"]
)
def test_it_cuts_a_mobile_signature(signature: str) -> None:
    assert trim_reply(f"On my way.\n\n{signature}") == TrimmedReply("On my way.", signature)


def test_it_shows_a_message_that_is_only_a_quote() -> None:
    text = "> Only a quote here.\r\n> Nothing else.\r\n"
    assert trim_reply(text) == TrimmedReply(
        shown="> Only a quote here.\n> Nothing else.", elided=""
    )


@pytest.mark.parametrize(
    "marker", ["---------- Forwarded message ---------", "-------- Message transféré --------"]
)
def test_it_keeps_a_forward_whole(marker: str) -> None:
    text = (
        f"FYI\n\n{marker}\nFrom: Alice <alice@example.org>\nDate: 5 March\nSubject: Report\n\nHi."
    )
    assert trim_reply(text) == TrimmedReply(shown=text, elided="")


def test_it_keeps_an_outlook_forward_whole() -> None:
    text = (
        "FYI\n\nFrom: Alice <alice@example.org>\nSent: Tuesday\nTo: Bob\nSubject: FW: Report\n\nHi."
    )
    assert trim_reply(text).shown == text


@pytest.mark.parametrize(
    "text",
    [
        "In 2019 I wrote:\n\nthe first draft, five pages of it.",
        "I emailed bob@example.org and he wrote:\n\nfine by me",
        "Hello\n\nam 09.09.2017 um 21:42 sssssss\nßßßßßßßß fffffff",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "Part one\n\n---\n\nPart two\nhas\nmore\nthan\nfour lines",
    ],
)
def test_it_leaves_ordinary_text_alone(text: str) -> None:
    assert trim_reply(text) == TrimmedReply(shown=text, elided="")
