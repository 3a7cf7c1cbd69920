"""GET /api/v1/attachments/ID: the stored bytes, downloaded, never run."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.conftest import Factory
from tests.web.conftest import File, Mailer, api_get

PDF = File("Résumé plan.pdf", "application/pdf", b"%PDF-1.4\n\x00\xff binary bytes")
PAGE = File("evil.html", "text/html", b"<script>alert(document.cookie)</script>")


@pytest.fixture(autouse=True)
def groups(eng_and_hr: None) -> None:
    """Every test here starts with the public eng and private hr groups."""


def attachment_urls(client: FlaskClient, mailer: Mailer, post_id: int, token: str) -> list[str]:
    thread = api_get(client, f"/api/v1/threads/{mailer.thread_of(post_id)}", token).get_json()
    return [a["url"] for post in thread["posts"] for a in post["attachments"]]


def test_it_downloads_the_stored_bytes_with_safe_headers(
    client: FlaskClient, mailer: Mailer, make: Factory
) -> None:
    token = make.token("bob@company.example")
    post = mailer.post("eng", "Files", files=[PDF])
    [url] = attachment_urls(client, mailer, post, token)
    response = api_get(client, url, token)
    assert response.status_code == 200
    assert response.data == PDF.data
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"R_sum_ plan.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20plan.pdf"
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("sandbox")


def test_an_html_attachment_is_sandboxed_and_downloaded(
    client: FlaskClient, mailer: Mailer, make: Factory
) -> None:
    token = make.token("bob@company.example")
    post = mailer.post("eng", "Page", files=[PAGE])
    [url] = attachment_urls(client, mailer, post, token)
    response = api_get(client, url, token)
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert b"<script>" in response.data


def test_a_private_attachment_is_a_404_for_a_non_member(
    client: FlaskClient, mailer: Mailer, make: Factory
) -> None:
    post = mailer.post("hr", "Contract", files=[PDF])
    [url] = attachment_urls(client, mailer, post, make.token("bob@company.example"))
    eve = make.token("eve@company.example")
    assert api_get(client, url, eve).status_code == 404
    assert api_get(client, "/api/v1/attachments/999999", eve).status_code == 404
