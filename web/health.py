"""`GET /healthz`: the process answers and the database does too."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from web.context import web_context

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    try:
        with web_context().db.reader() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("health check failed: database unavailable: %s", exc)
        response = jsonify(status="unavailable", reason="database unavailable")
        response.status_code = 503
    else:
        response = jsonify(status="ok")
    response.cache_control.no_store = True
    return response
