"""Threads and posts over the API: keyset paging, shapes, validation, privacy."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Factory
from tests.web.conftest import QUOTED_REPLY, File, Mailer, api_get


@pytest.fixture(autouse=True)
def groups(eng_and_hr: None) -> None:
    """Every test here starts with the public eng and private hr groups."""


@pytest.fixture
def bob(make: Factory) -> str:
    return make.token("bob@company.example")


@pytest.fixture
def eve(make: Factory) -> str:
    return make.token("eve@company.example")


def walk(client: FlaskClient, path: str, token: str, key: str) -> list[list[dict[str, Any]]]:
    """Every page of a cursor-paged list, following `next` to the end."""
    pages, url = [], path
    while True:
        response = api_get(client, url, token)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body[key])
        if body["next"] is None:
            return pages
        separator = "&" if "?" in path else "?"
        url = f"{path}{separator}cursor={body['next']}"


def test_threads_come_newest_activity_first_across_pages(
    client: FlaskClient, mailer: Mailer, bob: str
) -> None:
    first_posts = [mailer.post("eng", f"Topic {n}") for n in range(7)]
    # A reply makes the oldest thread the most recently active.
    mailer.post("eng", "Re: Topic 0", "Me too.", reply_to=first_posts[0])
    pages = walk(client, "/api/v1/groups/eng/threads?limit=3", bob, "threads")
    assert [len(page) for page in pages] == [3, 3, 1]
    subjects = [thread["subject"] for page in pages for thread in page]
    assert subjects == ["Topic 0"] + [f"Topic {n}" for n in range(6, 0, -1)]
    ids = [thread["id"] for page in pages for thread in page]
    assert len(set(ids)) == 7
    assert pages[0][0]["post_count"] == 2
    activity = [thread["last_activity"] for page in pages for thread in page]
    assert activity == sorted(activity, reverse=True)


def test_a_short_list_has_no_next_page(client: FlaskClient, mailer: Mailer, bob: str) -> None:
    mailer.post("eng", "Only topic")
    body = api_get(client, "/api/v1/groups/eng/threads", bob).get_json()
    assert [thread["subject"] for thread in body["threads"]] == ["Only topic"]
    assert body["next"] is None


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten", "1.5", ""])
def test_a_bad_limit_is_a_400_with_a_message(client: FlaskClient, bob: str, limit: str) -> None:
    response = api_get(client, f"/api/v1/groups/eng/threads?limit={limit}", bob)
    assert response.status_code == 400
    assert "limit must be a whole number from 1 to 200" in response.get_json()["error"]


@pytest.mark.parametrize("cursor", ["garbage", "WzEsbnVsbCwxXQ.forged", "a.b.c"])
def test_a_bad_cursor_is_a_400_with_a_message(client: FlaskClient, bob: str, cursor: str) -> None:
    response = api_get(client, f"/api/v1/groups/eng/threads?cursor={cursor}", bob)
    assert response.status_code == 400
    assert "invalid cursor" in response.get_json()["error"]


def test_a_cursor_of_another_group_is_refused(
    client: FlaskClient, mailer: Mailer, bob: str
) -> None:
    for n in range(2):
        mailer.post("hr", f"Private {n}")
    cursor = api_get(client, "/api/v1/groups/hr/threads?limit=1", bob).get_json()["next"]
    response = api_get(client, f"/api/v1/groups/eng/threads?cursor={cursor}", bob)
    assert response.status_code == 400


def test_a_thread_has_its_posts_authors_elided_text_and_attachments(
    client: FlaskClient, mailer: Mailer, bob: str
) -> None:
    pdf = File("Résumé plan.pdf", "application/pdf", b"%PDF-1.4 tiny")
    first = mailer.post("eng", "Release", "Shall we ship on Friday?", files=[pdf])
    reply = mailer.post("eng", "Re: Release", QUOTED_REPLY, reply_to=first)
    thread_id = mailer.thread_of(first)
    response = api_get(client, f"/api/v1/threads/{thread_id}", bob)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["id"], body["subject"], body["group"], body["next"]) == (
        thread_id,
        "Release",
        "eng",
        None,
    )
    opening, answer = body["posts"]
    assert opening["id"] == first
    assert opening["parent_id"] is None
    assert opening["author"] == {"email": "alice@company.example", "name": "Alice Example"}
    assert opening["source"] == "email"
    assert opening["message_id"].endswith("@company.example")
    [attachment] = opening["attachments"]
    assert attachment["filename"] == "Résumé plan.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert attachment["size"] == len(pdf.data)
    assert attachment["url"].startswith("/api/v1/attachments/")
    assert (answer["id"], answer["parent_id"]) == (reply, first)
    assert answer["body_text"] == "Agreed, ship it."
    assert "> Shall we ship on Friday?" in answer["elided_text"]
    assert answer["created_at"] >= opening["created_at"]


def test_long_threads_are_paged_in_created_order(
    client: FlaskClient, mailer: Mailer, bob: str
) -> None:
    first = mailer.post("eng", "Long", "Post 0")
    posts = [first] + [
        mailer.post("eng", "Re: Long", f"Post {n}", reply_to=first) for n in range(1, 5)
    ]
    thread_id = mailer.thread_of(first)
    pages = walk(client, f"/api/v1/threads/{thread_id}?limit=2", bob, "posts")
    assert [[post["id"] for post in page] for page in pages] == [
        posts[0:2],
        posts[2:4],
        posts[4:5],
    ]


def test_a_private_thread_is_a_404_for_a_non_member(
    client: FlaskClient, mailer: Mailer, bob: str, eve: str
) -> None:
    thread_id = mailer.thread_of(mailer.post("hr", "Salaries"))
    assert api_get(client, f"/api/v1/threads/{thread_id}", bob).status_code == 200
    hidden = api_get(client, f"/api/v1/threads/{thread_id}", eve)
    missing = api_get(client, f"/api/v1/threads/{thread_id + 1000}", eve)
    assert hidden.status_code == missing.status_code == 404


def test_a_private_group_is_a_404_for_a_non_member_like_a_missing_one(
    client: FlaskClient, eve: str
) -> None:
    hidden = api_get(client, "/api/v1/groups/hr/threads", eve)
    missing = api_get(client, "/api/v1/groups/nope/threads", eve)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.get_json() == {"error": "no group 'hr'"}
