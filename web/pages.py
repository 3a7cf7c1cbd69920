"""Server-rendered pages: sign-in, groups, a group's threads, a thread, a post.

Every page but sign-in/out needs a signed-in user (`web.auth`); the same
queries and visibility rule as the API decide what is shown. Post text is
rendered autoescaped; `body_html` is never rendered here.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from web import queries
from web.auth import (
    current_viewer,
    require_signed_in,
    safe_next,
    sign_in,
    sign_out,
    viewer_for_token,
)
from web.context import web_context
from web.downloads import attachment_response
from web.paging import read_cursor, within_budget, write_cursor
from web.records import PostView

blueprint = Blueprint("pages", __name__)
blueprint.before_request(require_signed_in)

THREADS_PER_PAGE = 50
POSTS_PER_PAGE = 200
# A thread page shows each text cut to this many characters and stops at
# about PAGE_TEXT_CHARS of text in all (a post may hold megabytes); a cut post
# links to its own page, `/p/ID`, where it is whole.
POST_TEXT_CHARS = 16 * 1024
PAGE_TEXT_CHARS = 1024 * 1024


@blueprint.app_template_filter("when")
def format_when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@blueprint.get("/login")
def login() -> str:
    return render_template("pages/login.html", next=request.args.get("next", ""), error=None)


@blueprint.post("/login")
def login_submit() -> Response | tuple[str, int]:
    token = request.form.get("token", "").strip()
    viewer = viewer_for_token(web_context().db, token) if token else None
    if viewer is None:
        page = render_template(
            "pages/login.html",
            next=request.form.get("next", ""),
            error="That token is not valid. Ask an administrator for a new one.",
        )
        return page, 400
    sign_in(viewer)
    return redirect(safe_next(request.form.get("next")))


@blueprint.post("/logout")
def logout() -> Response:
    sign_out()
    return redirect(url_for("pages.login"))


@blueprint.get("/")
def index() -> str:
    with web_context().db.reader() as session:
        groups = queries.list_groups(session, current_viewer())
    return render_template("pages/index.html", groups=groups)


@blueprint.get("/g/<slug>")
def group(slug: str) -> str:
    context = web_context()
    with context.db.reader() as session:
        found = queries.find_group(session, current_viewer(), slug)
        if found is None:
            abort(404, f"There is no group {slug!r}.")
        after = read_cursor(context.cursors, "threads", found.id)
        page = queries.list_threads(session, found.id, after, THREADS_PER_PAGE)
    older = write_cursor(context.cursors, "threads", found.id, page)
    return render_template("pages/group.html", group=found, threads=page.items, older=older)


@blueprint.get("/t/<id:thread_id>")
def thread(thread_id: int) -> str:
    context = web_context()
    with context.db.reader() as session:
        head = queries.find_thread(session, current_viewer(), thread_id)
        if head is None:
            abort(404, f"There is no thread {thread_id}.")
        after = read_cursor(context.cursors, "posts", thread_id)
        page = queries.list_posts(session, thread_id, after, POSTS_PER_PAGE, POST_TEXT_CHARS)
    page = within_budget(page, PAGE_TEXT_CHARS, _text_size, queries.post_position)
    later = write_cursor(context.cursors, "posts", thread_id, page)
    return render_template("pages/thread.html", thread=head, posts=page.items, later=later)


@blueprint.get("/p/<id:post_id>")
def post(post_id: int) -> str:
    """One post whole, with a link back to its place in the thread."""
    viewer = current_viewer()
    with web_context().db.reader() as session:
        found = queries.find_post(session, viewer, post_id)
        head = queries.find_thread(session, viewer, found.thread_id) if found else None
    if found is None or head is None:
        abort(404, f"There is no post {post_id}.")
    return render_template("pages/post.html", thread=head, post=found)


def _text_size(post: PostView) -> int:
    return len(post.body_text) + len(post.elided_text)


@blueprint.get("/a/<id:attachment_id>")
def attachment(attachment_id: int) -> Response:
    context = web_context()
    with context.db.reader() as session:
        found = queries.find_attachment(session, current_viewer(), attachment_id)
    if found is None:
        abort(404, f"There is no attachment {attachment_id}.")
    return attachment_response(context.blobs, found)
