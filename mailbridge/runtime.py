"""Assembling the pipeline from the settings, the same way in every process."""

from __future__ import annotations

import hashlib
import hmac

from feed.blobs import BlobStore
from feed.db import Database
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline


def loop_marker(settings: Settings) -> str:
    """The value our outgoing mail carries so it is recognised if it loops back."""
    return hmac.new(settings.secret_key.encode(), b"mailbridge-loop", hashlib.sha256).hexdigest()[
        :32
    ]


def make_pipeline(settings: Settings, db: Database) -> Pipeline:
    return Pipeline(
        db=db,
        blobs=BlobStore(settings.blob_dir),
        local_domains=frozenset({settings.mail_domain}),
        loop_marker=loop_marker(settings),
        refused_raw_bytes=settings.refused_raw_bytes,
    )
