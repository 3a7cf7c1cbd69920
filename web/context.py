"""What every request needs, installed once on the app: settings, database, blobs.

Kept in `app.extensions` (no module globals), read back with `web_context()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from feed.blobs import BlobStore
from feed.db import Database
from mailbridge.config import Settings
from web.paging import CursorCodec

EXTENSION_KEY = "mailbridge"


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    db: Database
    blobs: BlobStore
    cursors: CursorCodec


def install_context(app: Flask, settings: Settings, db: Database) -> None:
    app.extensions[EXTENSION_KEY] = WebContext(
        settings, db, BlobStore(settings.blob_dir), CursorCodec(settings.secret_key)
    )


def web_context() -> WebContext:
    context = current_app.extensions[EXTENSION_KEY]
    if not isinstance(context, WebContext):
        raise RuntimeError("the MailBridge web context is not installed (use create_app)")
    return context
