"""The typed message that crosses the inbound pipeline's stages.

`parse_message` (pipeline/parse.py) turns raw bytes into a `ParsedMessage`;
every later stage reads it and none of them touches the raw MIME tree except
through the helpers here.
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Address:
    """One mailbox: the lower-cased addr-spec and the decoded display name."""

    email: str
    name: str = ""


@dataclass(frozen=True)
class MessagePart:
    """An attachment or inline image, decoded to bytes."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None  # without angle brackets
    inline: bool = False


@dataclass(frozen=True)
class ParsedMessage:
    """A message decoded once: addresses, ids, bodies and parts.

    Message-IDs (own, In-Reply-To, References) are normalised: angle brackets
    and surrounding white space removed, so `<a@b>` and `a@b` compare equal.
    """

    raw: bytes
    message_id: str | None
    subject: str
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    thread_index: str | None
    content_type: str
    text: str | None
    html: str | None
    attachments: tuple[MessagePart, ...]
    headers: tuple[tuple[str, str], ...]
    defects: tuple[str, ...] = ()
    tree: email.message.Message | None = field(default=None, repr=False, compare=False)
    # Every mailbox the From field names (`sender` is the first), and why the
    # field is suspicious ("" when it is not): see pipeline/authors.py.
    authors: tuple[Address, ...] = ()
    from_warning: str = ""

    def trusted_authors(self) -> tuple[Address, ...]:
        """The From addresses a posting decision may rely on.

        Like DMARC, which authenticates the From domain (RFC 7489 §6.6.1):
        all of them when they share one domain, none when they are in several.
        """
        authors = self.authors or ((self.sender,) if self.sender else ())
        with_address = tuple(a for a in authors if a.email)
        domains = {a.email.rpartition("@")[2] for a in with_address}
        return with_address if len(domains) <= 1 else ()

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of header `name`, in message order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]
