"""A thread's API page is bounded in bytes as well as in posts: long texts
are cut in the list (`truncated`, with the post's own URL for the whole text)
and a page ends early, with a `next` cursor, once it has enough bytes."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from feed.db import Database
from feed.posts import Post
from tests.conftest import Factory
from tests.web.conftest import Mailer, api_get
from web.api import LIST_TEXT_CHARS, PAGE_BYTES

# Non-ASCII text: six bytes a character once escaped in JSON, so that a few
# posts fill a page's byte budget.
LONG_LINE = "é" * 69 + "\n"
LONG_BODY = LONG_LINE * (2 * LIST_TEXT_CHARS // len(LONG_LINE))


@pytest.fixture(autouse=True)
def groups(eng_and_hr: None) -> None:
    """Every test here starts with the public eng and private hr groups."""


@pytest.fixture
def bob(make: Factory) -> str:
    return make.token("bob@company.example")


@pytest.fixture
def eve(make: Factory) -> str:
    return make.token("eve@company.example")


def stored_body(db: Database, post_id: int) -> str:
    with db.reader() as session:
        return session.get_one(Post, post_id).body_text


def test_a_long_post_is_cut_in_the_thread_and_whole_at_its_url(
    client: FlaskClient, mailer: Mailer, db: Database, bob: str
) -> None:
    first = mailer.post("eng", "Long", LONG_BODY)
    short = mailer.post("eng", "Re: Long", "Short answer.", reply_to=first)
    body = api_get(client, f"/api/v1/threads/{mailer.thread_of(first)}", bob).get_json()
    long_post, short_post = body["posts"]
    full = stored_body(db, first)
    assert len(full) > LIST_TEXT_CHARS
    assert long_post["truncated"] is True
    assert long_post["body_text"] == full[:LIST_TEXT_CHARS]
    assert (short_post["truncated"], short_post["body_text"]) == (False, "Short answer.")
    assert short_post["url"] == f"/api/v1/posts/{short}"
    whole = api_get(client, long_post["url"], bob)
    assert whole.status_code == 200
    post = whole.get_json()
    assert (post["id"], post["thread_id"], post["truncated"]) == (
        first,
        mailer.thread_of(first),
        False,
    )
    assert post["body_text"] == full


def test_a_page_ends_at_its_byte_budget_and_the_next_goes_on(
    client: FlaskClient, mailer: Mailer, bob: str
) -> None:
    first = mailer.post("eng", "Many long", LONG_BODY)
    posts = [first] + [
        mailer.post("eng", "Re: Many long", f"{n}\n{LONG_BODY}", reply_to=first)
        for n in range(1, 14)
    ]
    path = f"/api/v1/threads/{mailer.thread_of(first)}"
    seen: list[int] = []
    sizes: list[int] = []
    url = path
    while url:
        response = api_get(client, url, bob)
        assert response.status_code == 200
        sizes.append(len(response.get_data()))
        page: dict[str, Any] = response.get_json()
        seen += [post["id"] for post in page["posts"]]
        url = f"{path}?cursor={page['next']}" if page["next"] else ""
    assert seen == posts  # every post once, in order: keyset paging holds
    assert len(sizes) > 1
    assert max(sizes) <= PAGE_BYTES


def test_a_post_of_a_private_group_is_a_404_for_a_non_member(
    client: FlaskClient, mailer: Mailer, bob: str, eve: str
) -> None:
    post_id = mailer.post("hr", "Salaries")
    assert api_get(client, f"/api/v1/posts/{post_id}", bob).status_code == 200
    hidden = api_get(client, f"/api/v1/posts/{post_id}", eve)
    missing = api_get(client, f"/api/v1/posts/{post_id + 1000}", eve)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.get_json() == {"error": f"no post {post_id}"}
