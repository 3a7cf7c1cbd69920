"""Serving an attachment so a browser downloads it and never runs it.

The bytes come from the blob store as stored; the name is RFC 6266
`attachment` with an ASCII fallback and the RFC 5987 UTF-8 form; the type is
the stored one when it is well-formed; `nosniff` and a sandboxing CSP stop an
uploaded HTML or SVG from running as our origin even if opened inline.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from flask import Response, send_file

from feed.blobs import BlobStore
from web.records import AttachmentFile

FALLBACK_TYPE = "application/octet-stream"
ATTACHMENT_CSP = "sandbox; default-src 'none'"
# RFC 6838 §4.2 type/subtype names, no parameters.
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
# RFC 5987 attr-char besides letters and digits (which quote() keeps, with "_.-~").
_ATTR_CHARS = "!#$&+^`|"


def attachment_response(blobs: BlobStore, attachment: AttachmentFile) -> Response:
    response = send_file(
        blobs.path_for(attachment.sha256),
        mimetype=FALLBACK_TYPE,
        conditional=True,
        etag=attachment.sha256,
    )
    response.headers["Content-Type"] = safe_content_type(attachment.content_type)
    response.headers["Content-Disposition"] = content_disposition(attachment.filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = ATTACHMENT_CSP
    response.cache_control.private = True
    response.cache_control.no_cache = True
    return response


def safe_content_type(stored: str) -> str:
    media_type = stored.split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.match(media_type) else FALLBACK_TYPE


def content_disposition(filename: str) -> str:
    """`attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266 §4.3)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\%' else "_" for c in filename
    )
    encoded = quote(filename, safe=_ATTR_CHARS)
    return f"attachment; filename=\"{fallback or 'attachment'}\"; filename*=UTF-8''{encoded}"
