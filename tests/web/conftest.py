"""Fixtures for the web tests: the real app, a client, and mail that becomes posts.

Posts are made the way production makes them: mail delivered through the
pipeline. Nothing is inserted by hand.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from feed.db import Database
from feed.posts import Post
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from tests.conftest import MAIL_DOMAIN, Factory
from web.app import create_app

SENDER = "alice@company.example"
QUOTED_REPLY = (
    "Agreed, ship it.\n\nOn Mon, Nov 23, 2026 at 9:14 AM Bob <bob@company.example> wrote:\n"
    "> Shall we ship on Friday?\n"
)


def address(slug: str) -> str:
    """The bound address of group `slug` in these tests."""
    return f"{slug}@{MAIL_DOMAIN}"


@dataclass(frozen=True)
class File:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Mailer:
    """Sends mail through the real pipeline and returns the new post's id."""

    pipeline: Pipeline
    db: Database
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def post(
        self,
        slug: str,
        subject: str,
        body: str = "Hello there.\nSecond line.",
        *,
        reply_to: int | None = None,
        files: Iterable[File] = (),
    ) -> int:
        message_id = f"web-test-{next(self.counter)}@company.example"
        data = _compose(slug, subject, body, message_id, self._message_id(reply_to), files)
        raw = RawMessage(data, Envelope(SENDER, (address(slug),)), Source.SMTP)
        outcome = self.pipeline.deliver(raw).outcomes[address(slug)]
        assert outcome.post_id is not None, outcome.reason
        return outcome.post_id

    def release_thread(self) -> int:
        """The eng thread the page tests read: an escaped subject and body,
        an attachment, and a reply that quotes it. The first post's id."""
        first = self.post(
            "eng",
            "Release <Friday>",
            "Shall we ship on Friday?\nSay <b>yes</b>.",
            files=[File("notes.txt", "text/plain", b"notes")],
        )
        self.post("eng", "Re: Release <Friday>", QUOTED_REPLY, reply_to=first)
        return first

    def thread_of(self, post_id: int) -> int:
        with self.db.reader() as session:
            return session.get_one(Post, post_id).thread_id

    def _message_id(self, post_id: int | None) -> str | None:
        if post_id is None:
            return None
        with self.db.reader() as session:
            return session.get_one(Post, post_id).message_id


def _compose(
    slug: str,
    subject: str,
    body: str,
    message_id: str,
    parent: str | None,
    files: Iterable[File],
) -> bytes:
    message = EmailMessage()
    message["From"] = f"Alice Example <{SENDER}>"
    message["To"] = address(slug)
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id}>"
    if parent:
        message["In-Reply-To"] = f"<{parent}>"
        message["References"] = f"<{parent}>"
    message.set_content(body)
    for item in files:
        maintype, _, subtype = item.content_type.partition("/")
        message.add_attachment(
            item.data, maintype=maintype, subtype=subtype, filename=item.filename
        )
    return message.as_bytes(policy=SMTP)


@pytest.fixture
def eng_and_hr(make: Factory) -> None:
    """A public group (eng) and a private one (hr) that Bob is in and Eve is not."""
    make.group("eng")
    make.group("hr", private=True)
    make.binding(address("eng"), "eng", senders="anyone")
    make.binding(address("hr"), "hr", senders="anyone")
    make.user("bob@company.example", "Bob")
    make.member("hr", "bob@company.example")
    make.user("eve@company.example", "Eve")


@pytest.fixture
def app(settings: Settings, db: Database) -> Flask:
    return create_app(settings, db)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def mailer(pipeline: Pipeline, db: Database) -> Mailer:
    return Mailer(pipeline, db)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_get(client: FlaskClient, path: str, token: str) -> TestResponse:
    return client.get(path, headers=bearer(token))


def csrf_token_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: FlaskClient, token: str) -> TestResponse:
    form = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"token": token, "csrf_token": csrf_token_in(form)})
