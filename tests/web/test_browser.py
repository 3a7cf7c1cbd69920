"""The server-rendered pages in a real browser: headless Chromium over real HTTP.

The app is served by waitress, as `mailbridge serve` serves it, on an
ephemeral 127.0.0.1 port; Chromium (Debian's `chromium`, driven by
Playwright) signs in through the real form and reads what a person would.
Every tab records its console errors and the URLs it asked for: the pages
must log no error and never reach past 127.0.0.1 (MailBridge runs air-gapped).

Without `/usr/bin/chromium` or the `playwright` module these tests skip, except
in CI (the CI variable set), where they fail: CI must not skip them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from flask import Flask
from waitress.server import create_server

from tests.conftest import Factory
from tests.requirements import require
from tests.web.conftest import Mailer

PLAYWRIGHT_FOUND = importlib.util.find_spec("playwright") is not None
if TYPE_CHECKING or PLAYWRIGHT_FOUND:
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Locator,
        Page,
        expect,
        sync_playwright,
    )

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOST = "127.0.0.1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module: the system one, never a download."""
    require(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK), str(CHROMIUM), "chromium")
    require(PLAYWRIGHT_FOUND, "the playwright module", "playwright")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def server_url(app: Flask) -> Iterator[str]:
    """The app served by waitress in a thread on an ephemeral port, stopped at teardown."""
    server = create_server(app, host=LOCAL_HOST, port=0, threads=2)
    thread = threading.Thread(target=server.run, name="web-test", daemon=True)
    thread.start()
    yield f"http://{LOCAL_HOST}:{server.effective_port}"
    server.close()
    server.task_dispatcher.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the web server did not stop"


@dataclass
class Tab:
    """A browser tab on the served app, recording the URLs it asked for and its errors."""

    page: Page
    requested: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected_errors: list[re.Pattern[str]] = field(default_factory=list)

    def record_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")

    def expect_error(self, pattern: str) -> None:
        """A console error this test causes on purpose (a 404 page logs one)."""
        self.expected_errors.append(re.compile(pattern))

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected_errors)]

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requested if urlsplit(url).hostname != LOCAL_HOST]


@pytest.fixture
def tab(browser: Browser, server_url: str) -> Iterator[Tab]:
    """A fresh browser context (no cookies) on the app; checked for errors and requests."""
    context = browser.new_context(base_url=server_url, viewport={"width": 1000, "height": 700})
    page = context.new_page()
    recorded = Tab(page)
    context.on("request", lambda request: recorded.requested.append(request.url))
    page.on("console", recorded.record_console)
    page.on("pageerror", lambda error: recorded.errors.append(f"page error: {error}"))
    yield recorded
    context.close()
    assert recorded.requested, "the tab asked for nothing"
    assert recorded.foreign_requests() == [], "a page reached past 127.0.0.1"
    assert recorded.unexpected_errors() == [], "the console logged errors"


@pytest.fixture(autouse=True)
def groups(eng_and_hr: None) -> None:
    """Every test here starts with the public eng and private hr groups."""


def sign_in(page: Page, token: str, path: str) -> None:
    """Ask for `path`, get sent to the sign-in form, fill it in and land on `path`."""
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    csrf = page.locator('form[action="/login"] input[name="csrf_token"]')
    assert csrf.get_attribute("value"), "the sign-in form carries no CSRF token"
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"^http://{re.escape(LOCAL_HOST)}:\d+{re.escape(path)}$"))


def assert_centred_in_bar(page: Page, item: Locator) -> None:
    bar, box = page.locator(".bar").bounding_box(), item.bounding_box()
    assert bar is not None
    assert box is not None
    middle = bar["y"] + bar["height"] / 2
    assert abs(box["y"] + box["height"] / 2 - middle) <= 2, "not centred in the top bar"


def test_a_member_signs_in_and_reads_a_thread(
    tab: Tab, make: Factory, mailer: Mailer, tmp_path: Path
) -> None:
    first = mailer.release_thread()
    page = tab.page
    sign_in(page, make.token("bob@company.example"), "/")

    expect(page.locator("h1")).to_have_text("Groups")
    expect(page.locator(".bar")).to_have_css("background-color", "rgb(31, 58, 95)")
    assert_centred_in_bar(page, page.get_by_role("button", name="Sign out"))
    hr = page.locator("main li", has=page.get_by_role("link", name="Hr"))
    expect(hr.locator(".tag")).to_have_text(["private", "member"])
    page.get_by_role("link", name="Eng", exact=True).click()

    expect(page).to_have_url(re.compile(r"/g/eng$"))
    expect(page.locator("h1")).to_have_text("Eng")
    row = page.locator("ul.threads li")
    expect(row).to_have_count(1)
    expect(row.locator(".meta")).to_contain_text("2 posts")
    row.get_by_role("link", name="Release <Friday>").click()

    expect(page).to_have_url(re.compile(rf"/t/{mailer.thread_of(first)}$"))
    expect(page).to_have_title("Release <Friday> · MailBridge")
    expect(page.locator("h1")).to_have_text("Release <Friday>")
    expect(page.locator(".crumbs a")).to_have_text("Eng")
    opening, reply = page.locator("article.post").all()
    expect(opening.locator("header")).to_contain_text("Alice Example <alice@company.example>")
    expect(opening.locator(".body")).to_have_text("Shall we ship on Friday?\nSay <b>yes</b>.")
    expect(opening.locator(".body b")).to_have_count(0)
    expect(opening.locator("details")).to_have_count(0)

    expect(reply.locator("div.body").first).to_have_text("Agreed, ship it.")
    quoted = reply.locator(".quoted")
    expect(quoted).to_be_hidden()
    expect(quoted).to_contain_text("> Shall we ship on Friday?")
    reply.get_by_text("show quoted text").click()
    expect(quoted).to_be_visible()

    link = opening.locator(".attachments").get_by_role("link", name="notes.txt")
    expect(link).to_have_attribute("href", re.compile(r"^/a/\d+$"))
    expect(opening.locator(".attachments .meta")).to_have_text("text/plain, 5 bytes")
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "notes.txt"
    assert Path(download.value.path()).read_bytes() == b"notes"

    shot = tmp_path / "thread.png"
    page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5000


def test_a_non_member_never_sees_the_private_group(tab: Tab, make: Factory, mailer: Mailer) -> None:
    secret = mailer.thread_of(mailer.post("hr", "Salaries"))
    page = tab.page
    sign_in(page, make.token("eve@company.example"), "/")

    expect(page.get_by_role("link", name="Eng", exact=True)).to_be_visible()
    expect(page.locator("main a")).to_have_count(1)
    pages: dict[str, str] = {}
    for path in ("/g/hr", f"/t/{secret}", "/g/nothing"):
        tab.expect_error(re.escape(path) + r"\)$")
        response = page.goto(path)
        assert response is not None
        assert response.status == 404
        expect(page.locator("h1")).to_have_text("404 Not Found")
        expect(page.locator("body")).not_to_contain_text("Salaries")
        expect(page.locator("body")).not_to_contain_text("Hr")
        pages[path] = page.locator("main").inner_text()
    # The private group reads exactly like a group that does not exist.
    assert pages["/g/hr"].replace("'hr'", "'nothing'") == pages["/g/nothing"]


def test_a_long_post_is_cut_in_the_thread_and_read_whole_on_its_page(
    tab: Tab, make: Factory, mailer: Mailer, tmp_path: Path
) -> None:
    body = "".join(f"Line {n} of the incident report.\n" for n in range(3000))
    first = mailer.post("eng", "Incident", body)
    mailer.post("eng", "Re: Incident", "Read it, thanks.", reply_to=first)
    page = tab.page
    sign_in(page, make.token("bob@company.example"), f"/t/{mailer.thread_of(first)}")

    opening, reply = page.locator("article.post").all()
    expect(opening.locator(".body")).to_contain_text("Line 0 of the incident report.")
    expect(opening.locator(".body")).not_to_contain_text("Line 2999 of")
    expect(reply.locator(".body")).to_have_text("Read it, thanks.")
    opening.locator(".cut").scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "cut-thread.png", full_page=False)
    opening.get_by_role("link", name="read it whole").click()

    expect(page).to_have_url(re.compile(rf"/p/{first}$"))
    expect(page.locator("article.post .body")).to_contain_text("Line 2999 of the incident report.")
    expect(page.locator(".cut")).to_have_count(0)
    page.get_by_role("link", name="Incident").click()
    expect(page).to_have_url(re.compile(rf"/t/{mailer.thread_of(first)}#post-{first}$"))
    page.goto(f"/p/{first}")
    shot = tmp_path / "post.png"
    page.screenshot(path=shot, full_page=False)
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
