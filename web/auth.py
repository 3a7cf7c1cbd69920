"""Who is asking: a bearer token for the API, the signed session for pages.

Both end in a `Viewer` on `flask.g`; views read it with `current_viewer()`.
Tokens are checked by `feed.admin.user_for_token` (only hashes are stored).
"""

from __future__ import annotations

import unicodedata

from flask import Response, g, jsonify, redirect, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from feed.admin import user_for_token
from feed.db import Database
from web import queries
from web.access import Viewer
from web.context import web_context

SESSION_USER_KEY = "user_id"
BEARER_CHALLENGE = 'Bearer realm="mailbridge"'
# Pages anyone may open: signing in, and signing out (which only clears the session).
PUBLIC_PAGES = frozenset({"pages.login", "pages.login_submit", "pages.logout"})


def current_viewer() -> Viewer:
    viewer = g.get("viewer")
    if not isinstance(viewer, Viewer):
        raise RuntimeError("no signed-in viewer: the view is missing its auth hook")
    return viewer


def viewer_for_token(db: Database, token: str) -> Viewer | None:
    with db.reader() as db_session:
        user = user_for_token(db_session, token)
        return Viewer(user.id, user.is_admin) if user else None


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (RFC 6750 §2.1)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def require_bearer_token() -> Response | None:
    """API hook: 401 with a Bearer challenge unless the token names a user."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return _unauthorized("missing API token: send Authorization: Bearer TOKEN", "")
    viewer = viewer_for_token(web_context().db, token)
    if viewer is None:
        return _unauthorized("invalid or revoked API token", ', error="invalid_token"')
    g.viewer = viewer
    return None


def _unauthorized(message: str, challenge_error: str) -> Response:
    response = jsonify(error=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = BEARER_CHALLENGE + challenge_error
    return response


def require_signed_in() -> BaseResponse | None:
    """Pages hook: the session's user, or a redirect to the sign-in form."""
    if request.endpoint in PUBLIC_PAGES:
        return None
    user_id = session.get(SESSION_USER_KEY)
    viewer = None
    if isinstance(user_id, int):
        with web_context().db.reader() as db_session:
            viewer = queries.find_viewer(db_session, user_id)
    if viewer is None:
        session.pop(SESSION_USER_KEY, None)  # a deleted user's session ends here
        return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
    g.viewer = viewer
    return None


def sign_in(viewer: Viewer) -> None:
    # A fresh session on every sign-in: nothing set before it survives (fixation).
    session.clear()
    session[SESSION_USER_KEY] = viewer.user_id


def sign_out() -> None:
    session.clear()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a local path only, never another site.

    A path starts with one "/" (no scheme, no "//" authority: RFC 3986 §4.2)
    and has no backslash and no control or other invisible character:
    browsers read "\\" as "/" and drop tabs and newlines (WHATWG URL
    standard), so "/\\evil" or "/\t/evil" would become "//evil", another
    site; and CR/LF in a Location header is header injection.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.index")
    if "\\" in target or not all(_visible(c) for c in target):
        return url_for("pages.index")
    return target


def _visible(char: str) -> bool:
    # Cc (controls), Cf (format, e.g. zero-width), Zl/Zp (line/paragraph separators).
    return char == " " or unicodedata.category(char) not in {
        "Cc",
        "Cf",
        "Cs",
        "Co",
        "Cn",
        "Zl",
        "Zp",
    }
