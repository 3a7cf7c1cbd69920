"""Extract: what the feed shows of a message.

The text body (HTML-only mail converted to text), sanitised HTML (nh3), and
the reply trimmed of quotes and signatures for display; what is trimmed is
kept as elided text, never thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import html2text
import nh3

from mailbridge.message import MessagePart, ParsedMessage
from mailbridge.trimming import trim_reply

# nh3's defaults plus cid: so inline images survive until the web view maps
# them to attachment URLs.
URL_SCHEMES = {"http", "https", "mailto", "cid"}


@dataclass(frozen=True)
class Content:
    text: str
    elided: str
    html: str | None
    attachments: tuple[MessagePart, ...]


def extract_content(message: ParsedMessage) -> Content:
    text = message.text if message.text and message.text.strip() else None
    if text is None and message.html:
        text = html_to_text(message.html)
    trimmed = trim_reply(text or "")
    html = sanitize_html(message.html) if message.html else None
    parts = tuple(
        replace(part, filename=safe_filename(part.filename)) for part in message.attachments
    )
    return Content(trimmed.shown, trimmed.elided, html, parts)


def safe_filename(name: str, limit: int = 200) -> str:
    """A file name fit to offer for download: no directories, no control characters.

    Senders' names are decoded faithfully by parse (even `C:\\TEMP\\x.png`);
    only the last path component is kept, and the extension survives truncation.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isprintable()).strip().lstrip(".")
    if len(cleaned) > limit:
        stem, dot, ext = cleaned.rpartition(".")
        cleaned = (
            (stem[: limit - len(ext) - 1] + dot + ext) if dot and len(ext) < 16 else cleaned[:limit]
        )
    return cleaned or "attachment.bin"


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # keep paragraphs on one line; the view wraps
    converter.ignore_images = True
    converter.unicode_snob = True
    return str(converter.handle(html)).strip()


def sanitize_html(html: str) -> str:
    return nh3.clean(html, url_schemes=URL_SCHEMES, link_rel="noopener noreferrer nofollow")
