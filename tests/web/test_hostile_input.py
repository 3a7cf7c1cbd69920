"""Hostile input to the web and the API: a 4xx with a message, never a 500 or
a redirect off the site."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.conftest import Factory
from tests.web.conftest import api_get, csrf_token_in

HUGE_ID = "99999999999999999999999"


@pytest.fixture(autouse=True)
def groups(eng_and_hr: None) -> None:
    """Every test here starts with the public eng and private hr groups."""


@pytest.fixture
def bob(make: Factory) -> str:
    return make.token("bob@company.example")


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/threads/{HUGE_ID}",
        f"/api/v1/attachments/{HUGE_ID}",
        f"/api/v1/posts/{HUGE_ID}",
        "/api/v1/threads/2147483648",
        "/api/v1/threads/0",
        "/api/v1/threads/-1",
        "/api/v1/threads/１２",
    ],
)
def test_an_id_out_of_range_is_a_json_404(client: FlaskClient, bob: str, path: str) -> None:
    response = api_get(client, path, bob)
    assert response.status_code == 404
    assert response.get_json()["error"]


@pytest.mark.parametrize("path", [f"/t/{HUGE_ID}", f"/a/{HUGE_ID}", "/t/2147483648"])
def test_a_page_id_out_of_range_is_a_404_page(
    client: FlaskClient, make: Factory, bob: str, path: str
) -> None:
    form = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"token": bob, "csrf_token": csrf_token_in(form)})
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/html"


@pytest.mark.parametrize("limit", ["²", "٣", "1" * 5000, "９"])
def test_a_limit_that_is_not_ascii_digits_is_a_400(
    client: FlaskClient, bob: str, limit: str
) -> None:
    response = api_get(client, f"/api/v1/groups/eng/threads?limit={limit}", bob)
    assert response.status_code == 400
    assert "limit must be a whole number from 1 to 200" in response.get_json()["error"]


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example/",
        "/\n/evil.example/",
        "/\r\nSet-Cookie: x=y",
        "/\x00x",
        "/\x7f/evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        "/\u2028/evil.example/",
    ],
)
def test_sign_in_goes_only_to_a_local_path(client: FlaskClient, make: Factory, target: str) -> None:
    form = client.get("/login").get_data(as_text=True)
    response = client.post(
        "/login",
        data={
            "token": make.token("bob@company.example"),
            "next": target,
            "csrf_token": csrf_token_in(form),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_sign_in_keeps_a_local_path_with_its_query(client: FlaskClient, make: Factory) -> None:
    form = client.get("/login").get_data(as_text=True)
    response = client.post(
        "/login",
        data={
            "token": make.token("bob@company.example"),
            "next": "/g/eng?cursor=abc",
            "csrf_token": csrf_token_in(form),
        },
    )
    assert response.headers["Location"] == "/g/eng?cursor=abc"
