"""Servers that misbehave on one message: left out of a FETCH answer while
still in the folder, or refused with NO. Dovecot cannot be configured to do
either, so `ImapClient.fetch` is wrapped to drop or refuse that one message
(the rest of the exchange is real). Also: a move back into the bound folder
is refused (it would import each message again in a loop)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from feed.db import Database
from feed.errors import InvalidInputError
from mailbridge.config import Settings
from mailbridge.imap import sync
from mailbridge.imap.client import FAILED_KEYWORD, IMPORTED_KEYWORD, ImapClient, ImapError
from mailbridge.pipeline.deliver import Pipeline
from tests.imap.dovecot import Dovecot
from tests.imap.harness import bind, cursor, importing, inbound_rows, mail, posts, run, until

pytestmark = pytest.mark.usefixtures("support_group")


def test_a_message_left_out_of_a_fetch_mid_chunk_is_given_up_and_loses_nothing(
    pipeline: Pipeline,
    db: Database,
    settings: Settings,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # UID 2 is left out of every FETCH answer while it stays in the folder.
    # It sits mid-chunk, and a second chunk follows.
    monkeypatch.setattr(sync, "CHUNK", 4)
    for number in range(1, 9):
        dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, dovecot)
    fetch = ImapClient.fetch

    async def fetch_without_2(self: ImapClient, uids: Sequence[int]) -> dict[int, bytes]:
        found = await fetch(self, uids)
        found.pop(2, None)
        return found

    monkeypatch.setattr(ImapClient, "fetch", fetch_without_2)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            # 3 and 4 (behind 2 in its chunk) must be posted, 2 given up.
            await until(
                lambda: posts(db) == 7 and inbound_rows(db, "rejected") == 1,
                "7 posts and UID 2 given up",
                15,
            )

    run(scenario)
    assert cursor(db)[1:] == (None, 0)  # nothing holds it any more
    assert inbound_rows(db, "ignored") == 0  # nothing delivered twice
    flags = dovecot.flags("alice", "INBOX")
    assert FAILED_KEYWORD in flags[2]
    assert "\\Seen" not in flags[2]
    assert all(IMPORTED_KEYWORD in flags[uid] for uid in flags if uid != 2)


def test_a_message_the_server_refuses_to_fetch_is_given_up(
    pipeline: Pipeline,
    db: Database,
    settings: Settings,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server answers NO to any FETCH naming UID 1.
    for number in range(1, 4):
        dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, dovecot)
    fetch = ImapClient.fetch

    async def refuse_1(self: ImapClient, uids: Sequence[int]) -> dict[int, bytes]:
        if 1 in uids:
            raise ImapError("FETCH refused: NO [SERVERBUG] cannot read this message")
        return await fetch(self, uids)

    monkeypatch.setattr(ImapClient, "fetch", refuse_1)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(
                lambda: posts(db) == 2 and inbound_rows(db, "rejected") == 1,
                "UID 1 given up and 2, 3 posted",
                20,
            )

    run(scenario)
    assert dovecot.message_count("alice", "INBOX") == 3
    assert FAILED_KEYWORD in dovecot.flags("alice", "INBOX")[1]


def test_moving_imported_mail_into_the_bound_folder_itself_is_refused(
    pipeline: Pipeline, db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    for after in ("move:INBOX", "move:inbox"):
        with pytest.raises(InvalidInputError, match="back into the bound folder"):
            bind(db, settings, dovecot, after=after)
