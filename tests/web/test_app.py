"""The app as a whole: health check, security headers, error shapes, API sign-in."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

from feed.db import Database
from mailbridge.config import Settings
from tests.conftest import Factory
from tests.web.conftest import api_get, bearer, sign_in
from web.app import create_app


def test_healthz_answers_ok_when_the_database_does(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_answers_503_with_a_reason_when_the_database_is_down(
    settings: Settings, tmp_path: Path
) -> None:
    # A directory is no SQLite database: every connection attempt fails.
    broken = Database(f"sqlite:///{tmp_path}")
    try:
        response = create_app(settings, broken).test_client().get("/healthz")
    finally:
        broken.dispose()
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "reason": "database unavailable"}


def test_every_response_carries_the_security_headers(client: FlaskClient) -> None:
    for response in (client.get("/healthz"), client.get("/login"), client.get("/api/v1/groups")):
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "http" not in csp  # no external origin at all
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"


def test_the_stylesheet_is_served_locally(client: FlaskClient) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    response.close()


def test_the_api_refuses_a_request_without_a_token(client: FlaskClient) -> None:
    response = client.get("/api/v1/groups")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="mailbridge"'
    assert "Authorization: Bearer" in response.get_json()["error"]


def test_the_api_refuses_a_bad_token(client: FlaskClient) -> None:
    response = api_get(client, "/api/v1/groups", "mb_not-a-real-token")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.get_json() == {"error": "invalid or revoked API token"}


def test_the_api_refuses_another_authorization_scheme(client: FlaskClient) -> None:
    response = client.get("/api/v1/groups", headers={"Authorization": "Basic YTpi"})
    assert response.status_code == 401


def test_api_errors_are_json_and_page_errors_are_html(client: FlaskClient, make: Factory) -> None:
    make.user("alice@company.example")
    token = make.token("alice@company.example")
    api_missing = api_get(client, "/api/v1/nowhere", token)
    assert api_missing.status_code == 404
    assert api_missing.mimetype == "application/json"
    assert "error" in api_missing.get_json()
    page_missing = client.get("/login/nowhere")
    assert page_missing.status_code == 404
    assert page_missing.mimetype == "text/html"
    assert "404" in page_missing.get_data(as_text=True)


def test_a_wrong_method_keeps_its_allow_header(client: FlaskClient, make: Factory) -> None:
    make.user("alice@company.example")
    response = client.post("/api/v1/groups", headers=bearer(make.token("alice@company.example")))
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.mimetype == "application/json"


def test_the_session_cookie_is_http_only_and_same_site(client: FlaskClient, make: Factory) -> None:
    make.user("alice@company.example")
    response = sign_in(client, make.token("alice@company.example"))
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
