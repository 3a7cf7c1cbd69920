"""Error answers: JSON `{"error": ...}` under /api, a plain HTML page elsewhere.

The status and headers (`Allow`, `WWW-Authenticate`, ...) of the HTTP error
are kept; only the body changes. Unexpected exceptions reach here as a 500
(Flask logs them) and show no internals.
"""

from __future__ import annotations

import json

from flask import Flask, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

API_PREFIX = "/api/"


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, render_http_error)


def render_http_error(error: HTTPException) -> Response:
    response = error.get_response()
    message = error.description or error.name
    if request.path.startswith(API_PREFIX):
        response.set_data(json.dumps({"error": message}))
        response.mimetype = "application/json"
    else:
        page = render_template(
            "pages/error.html", code=error.code, name=error.name, message=message
        )
        response.set_data(page)
        response.mimetype = "text/html"
    return response
