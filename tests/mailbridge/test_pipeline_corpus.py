"""The whole pipeline over the real-world corpus: every message ends somewhere known."""

from __future__ import annotations

import json
import mailbox
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from feed.db import Database
from feed.inbound import InboundLog
from feed.posts import Post
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from tests.conftest import Factory
from tests.mailbridge.corpus_files import message_files

BOUND = "corpus@company.example"


def open_group(make: Factory) -> None:
    make.group("corpus")
    make.binding(BOUND, "corpus", senders="anyone")


def deliver(pipeline: Pipeline, data: bytes) -> Any:
    raw = RawMessage(data, Envelope("sender@elsewhere.example", (BOUND,)), Source.IMPORT)
    return pipeline.deliver(raw)


def test_every_corpus_message_ends_as_a_post_or_a_recorded_reason(
    corpus: Path, make: Factory, pipeline: Pipeline, db: Database
) -> None:
    open_group(make)
    files = message_files(corpus / "mime") + message_files(corpus / "bounces")
    assert len(files) > 400, "the corpus looks incomplete"
    deferred = []
    for path in files:
        report = deliver(pipeline, path.read_bytes())
        outcome = report.outcomes[BOUND]
        if outcome.deferred:
            deferred.append(path.relative_to(corpus))
    assert deferred == [], f"temporary failures (unexpected exceptions) for {deferred}"
    with db.reader() as session:
        logged = session.scalar(select(func.count()).select_from(InboundLog))
        accepted = session.scalar(
            select(func.count()).select_from(InboundLog).where(InboundLog.status == "accepted")
        )
        posts = session.scalar(select(func.count()).select_from(Post))
        reasons = session.scalars(select(InboundLog.reason)).all()
    assert logged == len(files)
    assert posts == accepted
    assert all(reason.strip() for reason in reasons)


def test_the_fedora_month_threads_like_the_archive(
    corpus: Path, make: Factory, pipeline: Pipeline, db: Database
) -> None:
    open_group(make)
    fedora = corpus / "threading" / "fedora"
    archive = mailbox.mbox(fedora / "fedora-devel-mailman" / "2010-January.txt", create=False)
    for message in archive:
        outcome = deliver(pipeline, message.as_bytes()).outcomes[BOUND]
        assert outcome.accepted, outcome.reason
    expected = json.loads((fedora / "expected_threads.json").read_text())["threads"]
    expected_sets = {frozenset(_ids(root)) for root in expected}
    with db.reader() as session:
        rows = session.execute(select(Post.thread_id, Post.message_id)).all()
    threads: dict[int, set[str]] = defaultdict(set)
    for thread_id, message_id in rows:
        threads[thread_id].add(message_id)
    ours = {frozenset(ids) for ids in threads.values()}
    assert len(rows) == 292
    assert len(ours) == 60
    assert ours == expected_sets, _difference(ours, expected_sets)


def _ids(node: dict[str, Any]) -> list[str]:
    ids = [node["message_id"].strip("<>")]
    for child in node["children"]:
        ids.extend(_ids(child))
    return ids


def _difference(ours: set[frozenset[str]], expected: set[frozenset[str]]) -> str:
    extra = [sorted(t) for t in ours - expected]
    missing = [sorted(t) for t in expected - ours]
    return f"threads we made that the archive has not: {extra}\narchive threads we lack: {missing}"
