"""Extract: shown text, elided quotes, sanitised HTML and safe attachment names."""

from __future__ import annotations

from mailbridge.pipeline.extract import extract_content, safe_filename
from mailbridge.pipeline.parse import parse_message

HTML_ONLY = b"""From: Alice <alice@company.example>
To: eng@company.example
Subject: Hello
Message-ID: <html-1@company.example>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<p>Ship it <b>Friday</b>.</p><script>alert(1)</script><img src="cid:logo@x" onerror="x()">
"""


def test_html_only_mail_gets_a_text_body() -> None:
    content = extract_content(parse_message(HTML_ONLY))
    assert content.text == "Ship it **Friday**."


def test_html_is_sanitised_but_keeps_inline_image_references() -> None:
    html = extract_content(parse_message(HTML_ONLY)).html
    assert html is not None
    assert "<script" not in html
    assert "onerror" not in html
    assert 'src="cid:logo@x"' in html


def test_quoted_text_is_elided_not_lost() -> None:
    reply = HTML_ONLY.replace(b"Content-Type: text/html", b"Content-Type: text/plain").replace(
        b"<p>Ship it",
        b"Agreed.\n\nOn Mon, Nov 23, 2026 at 9:14 AM Bob <bob@company.example> wrote:\n> Ship it",
    )
    content = extract_content(parse_message(reply))
    assert content.text == "Agreed."
    assert "> Ship it" in content.elided


def test_attachment_names_lose_directories_and_control_characters() -> None:
    assert safe_filename("C:\\TEMP\\nsmail.png") == "nsmail.png"
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("re\x00port\n.pdf") == "report.pdf"
    assert safe_filename("") == "attachment.bin"


def test_long_attachment_names_keep_their_extension() -> None:
    name = safe_filename("x" * 300 + ".pdf")
    assert len(name) == 200
    assert name.endswith(".pdf")
