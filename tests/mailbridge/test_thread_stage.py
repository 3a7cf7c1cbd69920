"""The thread stage over the database: references, late parents, Outlook, subjects."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from feed.bindings import Binding
from feed.db import Database
from feed.posts import Post
from feed.threads import Thread
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from tests.conftest import Factory
from tests.poison import POISON_SUBJECT, posts_titled_poison_refused
from tests.web.conftest import api_get
from web.app import create_app

BOUND = "eng@company.example"


@pytest.fixture(autouse=True)
def eng(make: Factory) -> None:
    make.group("eng")
    make.binding(BOUND, "eng", senders="anyone")


def mail(message_id: str, subject: str, *, refs: str = "", **headers: str) -> bytes:
    lines = [
        "From: Bob <bob@company.example>",
        f"To: {BOUND}",
        f"Subject: {subject}",
        f"Message-ID: <{message_id}>",
    ]
    if refs:
        lines += [
            f"In-Reply-To: <{refs.split()[-1]}>",
            "References: " + " ".join(f"<{r}>" for r in refs.split()),
        ]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\nBody of " + message_id + "\r\n").encode()


def deliver(pipeline: Pipeline, data: bytes) -> int:
    raw = RawMessage(data, Envelope("bob@company.example", (BOUND,)), Source.SMTP)
    outcome = pipeline.deliver(raw).outcomes[BOUND]
    assert outcome.post_id is not None, outcome.reason
    return outcome.post_id


def thread_of(db: Database, post_id: int) -> int:
    with db.reader() as session:
        return session.get_one(Post, post_id).thread_id


def test_a_parent_arriving_after_its_reply_joins_and_adopts_it(
    pipeline: Pipeline, db: Database
) -> None:
    reply = deliver(pipeline, mail("b@x", "Re: Plan", refs="a@x"))
    parent = deliver(pipeline, mail("a@x", "Plan"))
    assert thread_of(db, reply) == thread_of(db, parent)
    with db.reader() as session:
        assert session.get_one(Post, reply).parent_id == parent


def test_siblings_of_a_missing_parent_share_a_thread(pipeline: Pipeline, db: Database) -> None:
    first = deliver(pipeline, mail("b@x", "Re: Old topic", refs="gone@x"))
    second = deliver(pipeline, mail("c@x", "Re: Old topic, other branch", refs="gone@x"))
    assert thread_of(db, first) == thread_of(db, second)


def post_counts(session: Session) -> dict[int, int]:
    return dict(session.execute(select(Thread.id, Thread.post_count)).all())


def test_a_late_parent_that_replies_elsewhere_leaves_both_threads_intact(
    pipeline: Pipeline, db: Database
) -> None:
    left = deliver(pipeline, mail("l@x", "Left"))
    right = deliver(pipeline, mail("r@x", "Right", refs="zz@x"))
    # r@x's missing parent zz@x turns up, itself a reply to l@x: it joins
    # its own parent's thread and merges nothing.
    link = deliver(pipeline, mail("zz@x", "Re: Left", refs="l@x"))
    assert thread_of(db, link) == thread_of(db, left) != thread_of(db, right)
    with db.reader() as session:
        assert session.get_one(Post, link).parent_id == left
        assert session.get_one(Post, right).parent_id is None  # not across threads
        counts = post_counts(session)
    assert counts == {thread_of(db, left): 2, thread_of(db, right): 1}


def test_references_naming_two_threads_merge_nothing(
    pipeline: Pipeline, db: Database, make: Factory, settings: Settings
) -> None:
    first = deliver(pipeline, mail("a1@x", "First"))
    deliver(pipeline, mail("a2@x", "Re: First", refs="a1@x"))
    second = deliver(pipeline, mail("b1@x", "Second"))
    deliver(pipeline, mail("b2@x", "Re: Second", refs="b1@x"))
    threads = {thread_of(db, first): 2, thread_of(db, second): 2}
    hostile = deliver(pipeline, mail("evil@x", "Re: Both", refs="a1@x a2@x b1@x"))
    assert thread_of(db, hostile) == thread_of(db, second)  # its nearest ancestor's
    threads[thread_of(db, second)] += 1
    with db.reader() as session:
        assert post_counts(session) == threads
    make.user("reader@company.example")
    token = make.token("reader@company.example")
    web = create_app(settings, db).test_client()
    for thread_id, posts in threads.items():
        response = api_get(web, f"/api/v1/threads/{thread_id}", token)
        assert response.status_code == 200
        assert len(response.get_json()["posts"]) == posts


def test_a_post_that_has_a_parent_is_never_re_parented(pipeline: Pipeline, db: Database) -> None:
    root = deliver(pipeline, mail("root@x", "Root"))
    # Its direct parent (missing@x) never reached us; its nearest known ancestor did.
    reply = deliver(pipeline, mail("reply@x", "Re: Root", refs="root@x missing@x"))
    claimant = deliver(pipeline, mail("missing@x", "Re: Root", refs="root@x"))
    with db.reader() as session:
        assert session.get_one(Post, reply).parent_id == root
        assert session.get_one(Post, claimant).parent_id == root


def thread_index(conversation: bytes, replies: int) -> str:
    return base64.b64encode(conversation + b"\x01\x02\x03\x04\x05" * replies).decode()


def test_outlook_thread_index_threads_mail_without_references(
    pipeline: Pipeline, db: Database
) -> None:
    conversation = bytes(range(22))
    first = deliver(pipeline, mail("o1@x", "Budget", Thread_Index=thread_index(conversation, 0)))
    second = deliver(
        pipeline, mail("o2@x", "AW: Budget 2027", Thread_Index=thread_index(conversation, 1))
    )
    other = deliver(
        pipeline, mail("o3@x", "AW: Budget 2027", Thread_Index=thread_index(bytes(22), 1))
    )
    assert thread_of(db, first) == thread_of(db, second)
    assert thread_of(db, other) != thread_of(db, first)


def test_a_reply_subject_without_references_joins_a_recent_thread(
    pipeline: Pipeline, db: Database
) -> None:
    original = deliver(pipeline, mail("s1@x", "[eng] Coffee machine"))
    reply = deliver(pipeline, mail("s2@x", "RE: AW: [eng] Coffee machine"))
    fresh = deliver(pipeline, mail("s3@x", "Coffee machine"))
    assert thread_of(db, reply) == thread_of(db, original)
    assert thread_of(db, fresh) != thread_of(db, original), "no Re: prefix, a new topic"


def test_the_subject_fallback_ignores_stale_threads(pipeline: Pipeline, db: Database) -> None:
    original = deliver(pipeline, mail("t1@x", "Quarterly report"))
    with db.transaction() as session:
        thread = session.get_one(Thread, thread_of(db, original))
        session.execute(
            update(Thread)
            .where(Thread.id == thread.id)
            .values(last_activity_at=thread.last_activity_at - timedelta(days=90))
        )
    reply = deliver(pipeline, mail("t2@x", "Re: Quarterly report"))
    assert thread_of(db, reply) != thread_of(db, original)


def test_mail_without_message_id_gets_a_stable_one(pipeline: Pipeline, db: Database) -> None:
    data = mail("x@x", "No id").replace(b"Message-ID: <x@x>\r\n", b"")
    post = deliver(pipeline, data)
    again = pipeline.deliver(
        RawMessage(b"Received: by relay\r\n" + data, Envelope("", (BOUND,)), Source.IMAP)
    ).outcomes[BOUND]
    assert again.post_id is None
    assert again.reason.startswith(f"duplicate of post {post}")
    with db.reader() as session:
        assert session.get_one(Post, post).message_id.startswith("derived.")


def test_oversized_ids_and_addresses_are_stored_not_retried_forever(
    pipeline: Pipeline, db: Database
) -> None:
    long_id = "x" * 2000 + "@company.example"
    long_sender = "a" * 400 + "@company.example"
    parent = deliver(
        pipeline, mail(long_id, "Huge id").replace(b"bob@company.example", long_sender.encode())
    )
    reply = deliver(pipeline, mail("r@x", "Re: Huge id", refs=long_id))
    assert thread_of(db, reply) == thread_of(db, parent)
    again = pipeline.deliver(
        RawMessage(mail(long_id, "Huge id"), Envelope("", (BOUND,)), Source.SMTP)
    ).outcomes[BOUND]
    assert again.reason.startswith(f"duplicate of post {parent}")


def test_a_batch_threads_a_reply_to_a_parent_of_the_same_batch_and_skips_its_repeat(
    pipeline: Pipeline, db: Database
) -> None:
    envelope = Envelope("bob@company.example", (BOUND,))
    raws = [
        RawMessage(data, envelope, Source.SMTP)
        for data in (
            mail("p@x", "Batch plan"),
            mail("q@x", "Re: Batch plan", refs="p@x"),
            mail("p@x", "Batch plan"),
        )
    ]
    parent, reply, repeat = (r.outcomes[BOUND] for r in pipeline.deliver_batch(raws))
    assert parent.post_id is not None
    assert reply.post_id is not None
    assert thread_of(db, reply.post_id) == thread_of(db, parent.post_id)
    with db.reader() as session:
        assert session.get_one(Post, reply.post_id).parent_id == parent.post_id
    assert repeat.post_id is None
    assert repeat.reason == f"duplicate of post {parent.post_id} (same Message-ID)"


def test_a_message_that_cannot_be_delivered_is_deferred_alone(
    pipeline: Pipeline, db: Database, make: Factory
) -> None:
    make.group("ops")
    make.binding("ops@company.example", "ops", senders="anyone")
    with db.transaction() as session:  # a row no command would write
        session.execute(
            update(Binding)
            .where(Binding.address == "ops@company.example")
            .values(sender_policy="everybody")
        )
    to_ops = RawMessage(
        mail("o@x", "For ops"),
        Envelope("bob@company.example", ("ops@company.example",)),
        Source.SMTP,
    )
    to_eng = RawMessage(
        mail("e@x", "For eng"), Envelope("bob@company.example", (BOUND,)), Source.SMTP
    )
    deferred, delivered = pipeline.deliver_batch([to_ops, to_eng])
    assert deferred.combined_reply().code == 451
    assert delivered.outcomes[BOUND].post_id is not None
    with db.reader() as session:
        assert session.scalars(select(Post.message_id)).all() == ["e@x"]


def test_a_write_failure_defers_only_its_message_and_the_batch_is_kept(
    pipeline: Pipeline, db: Database
) -> None:
    envelope = Envelope("bob@company.example", (BOUND,))
    raws = [
        RawMessage(mail(mid, subject), envelope, Source.SMTP)
        for mid, subject in (("g1@x", "Good"), ("p@x", POISON_SUBJECT), ("g2@x", "Re: Good"))
    ]
    with posts_titled_poison_refused(db):
        first, poisoned, last = pipeline.deliver_batch(raws)
    assert poisoned.combined_reply().code == 451
    assert first.outcomes[BOUND].post_id is not None
    assert last.outcomes[BOUND].post_id is not None
    with db.reader() as session:
        assert sorted(session.scalars(select(Post.message_id))) == ["g1@x", "g2@x"]
