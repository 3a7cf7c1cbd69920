"""The server-rendered pages: sign-in with a token, groups, threads, sign-out.

CSRF protection stays on: every form post carries the token from the form.
"""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from tests.conftest import Factory
from tests.web.conftest import Mailer, csrf_token_in, sign_in
from web.pages import POST_TEXT_CHARS


@pytest.fixture(autouse=True)
def groups(eng_and_hr: None) -> None:
    """Every test here starts with the public eng and private hr groups."""


@pytest.fixture
def bob(client: FlaskClient, make: Factory) -> FlaskClient:
    """The client, signed in as Bob (a member of the private group)."""
    response = sign_in(client, make.token("bob@company.example"))
    assert response.status_code == 302
    return client


@pytest.fixture
def eve(client: FlaskClient, make: Factory) -> FlaskClient:
    """The client, signed in as Eve (no private group)."""
    assert sign_in(client, make.token("eve@company.example")).status_code == 302
    return client


def test_pages_need_a_signed_in_user(client: FlaskClient) -> None:
    response = client.get("/g/eng")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/g/eng"


def test_signing_in_with_a_token_leads_back_to_the_page_asked_for(
    client: FlaskClient, make: Factory
) -> None:
    form = client.get("/login?next=/g/eng").get_data(as_text=True)
    response = client.post(
        "/login",
        data={
            "token": make.token("bob@company.example"),
            "next": "/g/eng",
            "csrf_token": csrf_token_in(form),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/g/eng"
    assert client.get("/g/eng").status_code == 200


def test_signing_in_never_redirects_to_another_site(client: FlaskClient, make: Factory) -> None:
    form = client.get("/login").get_data(as_text=True)
    response = client.post(
        "/login",
        data={
            "token": make.token("bob@company.example"),
            "next": "//evil.example/",
            "csrf_token": csrf_token_in(form),
        },
    )
    assert response.headers["Location"] == "/"


def test_a_bad_token_shows_the_form_again(client: FlaskClient) -> None:
    form = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"token": "mb_wrong", "csrf_token": csrf_token_in(form)})
    assert response.status_code == 400
    assert "That token is not valid" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_signing_in_without_the_csrf_token_is_refused(client: FlaskClient, make: Factory) -> None:
    response = client.post("/login", data={"token": make.token("bob@company.example")})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_the_home_page_lists_the_visible_groups(bob: FlaskClient) -> None:
    html = bob.get("/").get_data(as_text=True)
    assert 'href="/g/eng"' in html
    assert 'href="/g/hr"' in html


def test_the_home_page_hides_private_groups_from_non_members(eve: FlaskClient) -> None:
    html = eve.get("/").get_data(as_text=True)
    assert 'href="/g/eng"' in html
    assert "/g/hr" not in html


def test_the_group_page_lists_threads_newest_first_with_an_older_link(
    bob: FlaskClient, mailer: Mailer
) -> None:
    for n in range(52):
        mailer.post("eng", f"Topic {n:02d}")
    html = bob.get("/g/eng").get_data(as_text=True)
    assert html.index("Topic 51") < html.index("Topic 50")
    assert "Topic 01" not in html
    older = html.split('rel="next" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    rest = bob.get(older).get_data(as_text=True)
    assert "Topic 01" in rest
    assert "Topic 00" in rest
    assert "Topic 51" not in rest


def test_the_thread_page_shows_the_trimmed_text_quotes_and_attachments(
    bob: FlaskClient, mailer: Mailer
) -> None:
    first = mailer.release_thread()
    response = bob.get(f"/t/{mailer.thread_of(first)}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<h1>Release &lt;Friday&gt;</h1>" in html
    assert "Shall we ship on Friday?\nSay &lt;b&gt;yes&lt;/b&gt;." in html
    assert "Agreed, ship it." in html
    assert "<summary>show quoted text</summary>" in html
    assert "&gt; Shall we ship on Friday?" in html
    assert "Alice Example" in html
    link = html.split('href="/a/', 1)[1].split('"', 1)[0]
    download = bob.get(f"/a/{link}")
    assert download.data == b"notes"
    assert download.headers["Content-Disposition"].startswith("attachment;")


def test_a_private_group_page_is_a_404_for_a_non_member(eve: FlaskClient, mailer: Mailer) -> None:
    thread_id = mailer.thread_of(mailer.post("hr", "Salaries"))
    for path in ("/g/hr", f"/t/{thread_id}", "/g/no-such-group"):
        response = eve.get(path)
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        assert "Salaries" not in response.get_data(as_text=True)


def test_a_member_sees_the_private_thread(bob: FlaskClient, mailer: Mailer) -> None:
    thread_id = mailer.thread_of(mailer.post("hr", "Salaries"))
    assert "Salaries" in bob.get("/g/hr").get_data(as_text=True)
    assert bob.get(f"/t/{thread_id}").status_code == 200


def test_signing_out_needs_the_csrf_token_and_ends_the_session(bob: FlaskClient) -> None:
    page = bob.get("/").get_data(as_text=True)
    assert bob.post("/logout").status_code == 400
    assert bob.get("/").status_code == 200
    response = bob.post("/logout", data={"csrf_token": csrf_token_in(page)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert bob.get("/").status_code == 302


LONG_BODY = "A long line of the report.\n" * 2000  # 54,000 characters


def test_a_long_post_is_cut_on_the_thread_page_and_whole_on_its_own(
    bob: FlaskClient, mailer: Mailer
) -> None:
    first = mailer.post("eng", "Report", LONG_BODY)
    mailer.post("eng", "Re: Report", "Thanks.", reply_to=first)
    page = bob.get(f"/t/{mailer.thread_of(first)}").get_data(as_text=True)
    assert page.count("A long line of the report.") == POST_TEXT_CHARS // 27
    assert f'href="/p/{first}"' in page
    assert "Thanks." in page
    whole = bob.get(f"/p/{first}")
    assert whole.status_code == 200
    text = whole.get_data(as_text=True)
    assert text.count("A long line of the report.") == 2000
    assert f'href="/t/{mailer.thread_of(first)}#post-{first}"' in text


def test_a_thread_page_stops_at_its_text_budget_and_the_next_goes_on(
    bob: FlaskClient, mailer: Mailer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("web.pages.PAGE_TEXT_CHARS", 2 * POST_TEXT_CHARS)
    first = mailer.post("eng", "Many", f"post 0\n{LONG_BODY}")
    for n in range(1, 5):
        mailer.post("eng", "Re: Many", f"post {n}\n{LONG_BODY}", reply_to=first)
    url: str | None = f"/t/{mailer.thread_of(first)}"
    pages: list[list[int]] = []
    while url:
        html = bob.get(url).get_data(as_text=True)
        pages.append([n for n in range(5) if f"post {n}\n" in html])
        found = re.search(r'<a rel="next" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert pages == [[0, 1], [2, 3], [4]]


def test_a_private_post_page_is_a_404_for_a_non_member(eve: FlaskClient, mailer: Mailer) -> None:
    post_id = mailer.post("hr", "Salaries")
    for path in (f"/p/{post_id}", "/p/99999999999999999999999", "/p/999999"):
        response = eve.get(path)
        assert response.status_code == 404
        assert "Salaries" not in response.get_data(as_text=True)
