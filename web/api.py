"""The JSON API, `/api/v1`: read-only, bearer-token authenticated.

Every view validates its parameters, asks `web.queries` (which applies the
visibility rule) and serialises; a group the caller may not see is a 404
exactly like a missing one. No cookies are read here, so no CSRF check.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, request

from feed.inbound import InboundStatus
from web import queries
from web.access import can_read_inbound
from web.auth import current_viewer, require_bearer_token
from web.context import web_context
from web.downloads import attachment_response
from web.paging import read_cursor, read_limit, within_budget, write_cursor
from web.serialize import (
    group_json,
    inbound_json,
    json_size,
    post_json,
    thread_json,
    thread_summary_json,
    whole_post_json,
)

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
blueprint.before_request(require_bearer_token)

THREADS_LIMIT = (50, 200)  # (default, maximum)
POSTS_LIMIT = (500, 500)
# A thread's page stops at about this many bytes of JSON (the next page goes
# on from there), and each post's texts are cut to LIST_TEXT_CHARS in it: a
# post may be 25 MB, and 500 of them would be gigabytes in one answer.
PAGE_BYTES = 1024 * 1024
LIST_TEXT_CHARS = 16 * 1024
INBOUND_LIMIT = (50, 200)
STATUSES = ", ".join(status.value for status in InboundStatus)


@blueprint.get("/groups")
def groups() -> Response:
    with web_context().db.reader() as session:
        found = queries.list_groups(session, current_viewer())
    return jsonify(groups=[group_json(group) for group in found])


@blueprint.get("/groups/<slug>/threads")
def group_threads(slug: str) -> Response:
    context = web_context()
    limit = read_limit(*THREADS_LIMIT)
    with context.db.reader() as session:
        group = queries.find_group(session, current_viewer(), slug)
        if group is None:
            abort(404, f"no group {slug!r}")
        after = read_cursor(context.cursors, "threads", group.id)
        page = queries.list_threads(session, group.id, after, limit)
    return jsonify(
        threads=[thread_summary_json(thread) for thread in page.items],
        next=write_cursor(context.cursors, "threads", group.id, page),
    )


@blueprint.get("/threads/<id:thread_id>")
def thread(thread_id: int) -> Response:
    """A page of a thread's posts: at most `limit` of them and about
    PAGE_BYTES of JSON, each text cut to LIST_TEXT_CHARS (`truncated`)."""
    context = web_context()
    limit = read_limit(*POSTS_LIMIT)
    with context.db.reader() as session:
        head = queries.find_thread(session, current_viewer(), thread_id)
        if head is None:
            abort(404, f"no thread {thread_id}")
        after = read_cursor(context.cursors, "posts", thread_id)
        page = queries.list_posts(session, thread_id, after, limit, LIST_TEXT_CHARS)
    shapes = {post.id: post_json(post) for post in page.items}
    page = within_budget(
        page, PAGE_BYTES, lambda post: json_size(shapes[post.id]), queries.post_position
    )
    next_cursor = write_cursor(context.cursors, "posts", thread_id, page)
    return jsonify(thread_json(head, [shapes[post.id] for post in page.items], next_cursor))


@blueprint.get("/posts/<id:post_id>")
def post(post_id: int) -> Response:
    """One post with its whole text (a thread's page may have cut it)."""
    with web_context().db.reader() as session:
        found = queries.find_post(session, current_viewer(), post_id)
    if found is None:
        abort(404, f"no post {post_id}")
    return jsonify(whole_post_json(found))


@blueprint.get("/attachments/<id:attachment_id>")
def attachment(attachment_id: int) -> Response:
    context = web_context()
    with context.db.reader() as session:
        found = queries.find_attachment(session, current_viewer(), attachment_id)
    if found is None:
        abort(404, f"no attachment {attachment_id}")
    return attachment_response(context.blobs, found)


@blueprint.get("/inbound")
def inbound() -> Response:
    context = web_context()
    if not can_read_inbound(current_viewer()):
        abort(403, "only administrators may read the inbound log")
    status = _read_status()
    limit = read_limit(*INBOUND_LIMIT)
    after = read_cursor(context.cursors, "inbound", 0)
    with context.db.reader() as session:
        page = queries.list_inbound(session, status, after, limit)
    return jsonify(
        inbound=[inbound_json(entry) for entry in page.items],
        next=write_cursor(context.cursors, "inbound", 0, page),
    )


@blueprint.get("/inbound/<id:entry_id>/raw")
def inbound_raw(entry_id: int) -> Response:
    """The raw message of an inbound-log entry: how admins read mail for the
    postmaster and see what was refused."""
    context = web_context()
    if not can_read_inbound(current_viewer()):
        abort(403, "only administrators may read the inbound log")
    with context.db.reader() as session:
        found = queries.find_inbound_raw(session, entry_id)
    if found is None or not context.blobs.exists(found.sha256):
        abort(404, f"no raw message kept for inbound entry {entry_id}")
    return attachment_response(context.blobs, found)


def _read_status() -> InboundStatus | None:
    raw = request.args.get("status")
    if raw is None:
        return None
    try:
        return InboundStatus(raw)
    except ValueError:
        abort(400, f"status must be one of {STATUSES}, got {raw!r}")
