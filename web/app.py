"""The Flask application factory: configuration, blueprints, errors, headers.

`mailbridge.server.WebServer` calls `create_app(settings, db)`; tests do too.
"""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from feed.db import Database
from mailbridge.config import Settings
from web import api, health, pages
from web.context import install_context
from web.converters import RowIdConverter
from web.errors import register_error_handlers
from web.security import add_security_headers


def create_app(settings: Settings, db: Database) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Nothing the web takes is bigger than a message the mail side accepts.
        MAX_CONTENT_LENGTH=settings.max_message_size,
        SESSION_COOKIE_NAME="mailbridge_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.url_map.converters["id"] = RowIdConverter
    install_context(app, settings, db)
    csrf = CSRFProtect(app)
    # Bearer tokens, no cookies: a cross-site request cannot carry them.
    csrf.exempt(api.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    register_error_handlers(app)
    app.after_request(add_security_headers)
    return app
