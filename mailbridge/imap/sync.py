"""One sync pass over a bound IMAP folder: new messages in, oldest first.

The order of things is what makes it exactly-once:
1. the cursor (UIDVALIDITY, last UID) is read from the database;
2. a changed UIDVALIDITY restarts it at zero: every message is delivered
   again and the pipeline's Message-ID (or content) identity keeps each to
   one post (RFC 3501 §2.3.1.1);
3. messages above the cursor are fetched in chunks and each chunk is
   delivered as one batch, whose transaction also moves the cursor
   (pipeline.mailbox);
4. only then is the after-import action applied (\\Seen and $MailBridge, a
   move or a delete), and a pass first catches up on actions a crash
   skipped, for every UID at or below the cursor.
A message that keeps failing is given up after `MAX_ATTEMPTS` passes,
recorded with its raw bytes and reason; the messages behind it are
delivered meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from feed.bindings import ImapBinding
from feed.credentials import unseal
from feed.mailboxes import AfterImport, SyncCursor, parse_after, read_cursor, restart_cursor
from mailbridge.imap.client import FAILED_KEYWORD, ImapClient, ImapError, Mailbox
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.mailbox import count_attempt, settle
from mailbridge.pipeline.route import imap_recipient
from mailbridge.pipeline.types import Envelope, MailboxOrigin, RawMessage, Source
from mailbridge.workers import Deliverer

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
# Messages fetched and delivered together: one FETCH, one transaction.
CHUNK = 16
_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<([^>\r\n\x00]*)>", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SyncTarget:
    """What a sync pass needs of an IMAP binding, and how to reach its folder."""

    id: int
    name: str
    after: AfterImport
    mailbox: Mailbox

    @property
    def remote(self) -> str:
        """imap://user@host:port/folder, for the inbound log."""
        box = self.mailbox
        return f"imap://{box.username}@{box.host}:{box.port}/{box.folder}"


def sync_target(row: ImapBinding, secret_key: str) -> SyncTarget:
    """A binding's row as a sync pass (or `binding test`) uses it: password unsealed."""
    password = unseal(secret_key, row.password_sealed)
    mailbox = Mailbox(row.host, row.port, row.tls == "implicit", row.username, password, row.folder)
    return SyncTarget(row.id, row.name, parse_after(row.after_import), mailbox)


@dataclass(frozen=True)
class PassResult:
    delivered: int
    # A message failed and will be tried again: sync again soon, not at the next push.
    retry_soon: bool


class FolderSync:
    def __init__(self, binding: SyncTarget, pipeline: Pipeline, deliverer: Deliverer) -> None:
        self.binding = binding
        self.pipeline = pipeline
        self.deliverer = deliverer

    async def run(self, client: ImapClient) -> PassResult:
        client.news = False  # what arrives from now on makes another pass
        cursor = await self._cursor(client.folder.uidvalidity)
        await self._catch_up(client, cursor.last_uid)
        delivered = 0
        retry_soon = False
        # With `seen`, a message that carries our keyword is posted already
        # (behind a failing one, or before a UIDVALIDITY change): not again.
        # The cursor passes them with the next new message.
        seen = self.binding.after.action == "seen"
        new = await client.uids_after(cursor.last_uid, unmarked=seen)
        if cursor.stuck_uid is not None and cursor.stuck_uid not in new:
            if await client.present([cursor.stuck_uid]):  # it carries our keyword
                new = sorted({*new, cursor.stuck_uid})
            else:  # a user deleted or moved it: nothing holds the cursor any more
                await self._write(settle, cursor.stuck_uid, client.folder.uidvalidity)
        for start in range(0, len(new), CHUNK):
            chunk = new[start : start + CHUNK]
            if chunk[0] == cursor.stuck_uid and cursor.stuck_attempts >= MAX_ATTEMPTS:
                await self._give_up(client, chunk[0], cursor.stuck_attempts)
                chunk = chunk[1:]
            count, failed = await self._deliver_isolating(client, chunk)
            delivered += count
            retry_soon = retry_soon or failed
        return PassResult(delivered, retry_soon)

    async def _deliver_isolating(self, client: ImapClient, uids: Sequence[int]) -> tuple[int, bool]:
        """`_deliver`; when a whole batch fails (a worker killed by one
        message, a row the database refuses), each message alone, so that
        only the culprit fails and its attempts are counted."""
        try:
            done, failed, all_deferred = await self._deliver(client, uids)
        except ImapError:
            raise
        except Exception:
            if len(uids) == 1:
                log.exception("IMAP %s: delivering UID %d failed", self.binding.name, uids[0])
                await self._write(count_attempt, uids[0], client.folder.uidvalidity)
                return 0, True
            all_deferred = True
        if not all_deferred or len(uids) == 1:
            return done, failed
        log.warning("IMAP %s: a batch failed; delivering it message by message", self.binding.name)
        results = [await self._deliver_isolating(client, [uid]) for uid in uids]
        return sum(r[0] for r in results), any(r[1] for r in results)

    async def _cursor(self, uidvalidity: int) -> SyncCursor:
        cursor = await asyncio.to_thread(self._read_cursor)
        if cursor.uidvalidity == uidvalidity:
            return cursor
        if cursor.uidvalidity is not None:
            log.warning(
                "IMAP binding %s: UIDVALIDITY changed from %s to %s; reading the folder again "
                "(messages already posted are recognised by Message-ID)",
                self.binding.name,
                cursor.uidvalidity,
                uidvalidity,
            )
        await asyncio.to_thread(self._restart_cursor, uidvalidity)
        return SyncCursor(uidvalidity, 0, None, 0)

    async def _deliver(self, client: ImapClient, uids: Sequence[int]) -> tuple[int, bool, bool]:
        """Deliver one chunk: (messages done, whether one failed, whether
        every message fetched came back deferred)."""
        if not uids:
            return 0, False, False
        fetched, unreadable = await self._fetch(client, uids)
        validity = client.folder.uidvalidity
        # Up to the first message the server would not give: that one is a
        # failed attempt, and the cursor cannot pass it.
        readable = [uid for uid in uids if unreadable is None or uid < unreadable]
        raws = [self._raw(fetched[uid], validity, uid) for uid in readable if uid in fetched]
        if unreadable is not None:
            await self._write(count_attempt, unreadable, validity)
        if not raws:
            return 0, unreadable is not None, False
        reports = await self.deliverer.deliver_together(raws)
        # Every message whose rows are committed gets its after-import action,
        # also those behind a failed one (the cursor stops there, not they).
        done = [
            raw.origin.uid
            for raw, report in zip(raws, reports, strict=True)
            if raw.origin is not None
            and not any(outcome.deferred for outcome in report.outcomes.values())
        ]
        if done:
            await self._after_import(client, done)
        failed = len(done) < len(raws) or unreadable is not None
        return len(done), failed, not done

    async def _fetch(
        self, client: ImapClient, uids: Sequence[int]
    ) -> tuple[dict[int, bytes], int | None]:
        """The messages, and the lowest UID still in the folder that could not
        be fetched (one that left the folder meanwhile is simply gone)."""
        try:
            fetched = await client.fetch(uids)
        except ImapError:
            if len(uids) == 1:  # the server refuses this message itself
                return {}, uids[0] if await client.present(uids) else None
            fetched = {}
            for uid in uids:  # find which one the server refuses
                one, bad = await self._fetch(client, [uid])
                fetched.update(one)
                if bad is not None:
                    return fetched, bad
            return fetched, None
        missing = [uid for uid in uids if uid not in fetched]
        still_there = await client.present(missing) if missing else []
        return fetched, min(still_there, default=None)

    async def _give_up(self, client: ImapClient, uid: int, attempts: int) -> None:
        """Record a message that failed too often and leave it in the folder,
        flagged for a person: never moved nor deleted unread."""
        try:
            data = (await client.fetch([uid])).get(uid)
        except ImapError:
            if client.lost.is_set():
                raise
            data = None  # the server refuses it: given up all the same
        if data is None and not await client.present([uid]):
            return  # gone from the folder: the next pass frees the cursor
        kept = (
            "its raw bytes are kept"
            if data is not None
            else "the server would not return its content"
        )
        reason = (
            f"IMAP UID {uid} failed {attempts} times and was given up ({kept}); "
            f"it is left in the mailbox, flagged {FAILED_KEYWORD}"
        )
        log.error("IMAP binding %s: %s", self.binding.name, reason)
        raw = self._raw(data or b"", client.folder.uidvalidity, uid)
        await asyncio.to_thread(self.pipeline.give_up, raw, reason)
        await client.mark_failed([uid])

    async def _catch_up(self, client: ImapClient, last_uid: int) -> None:
        """Apply the after-import action a crash may have skipped (idempotent)."""
        unmarked = self.binding.after.action == "seen"
        pending = await client.uids_up_to(last_uid, unmarked=unmarked)
        if pending:
            await self._after_import(client, pending)

    async def _after_import(self, client: ImapClient, uids: Sequence[int]) -> None:
        after = self.binding.after
        if after.action == "seen":
            await client.mark_imported(uids)
        elif after.action == "move":
            await client.move(uids, after.folder)
        else:
            await client.delete(uids)

    def _raw(self, data: bytes, uidvalidity: int, uid: int) -> RawMessage:
        found = _RETURN_PATH.search(data[:65536])
        mail_from = found.group(1).decode("ascii", "replace") if found else ""
        envelope = Envelope(mail_from, (imap_recipient(self.binding.name),), self.binding.remote)
        origin = MailboxOrigin(self.binding.id, uidvalidity, uid)
        return RawMessage(data, envelope, Source.IMAP, origin)

    async def _write(
        self, change: Callable[[Connection, MailboxOrigin], None], uid: int, uidvalidity: int
    ) -> None:
        origin = MailboxOrigin(self.binding.id, uidvalidity, uid)

        def write() -> None:
            with self.pipeline.db.transaction() as session:
                change(session.connection(), origin)

        await asyncio.to_thread(write)

    def _read_cursor(self) -> SyncCursor:
        with self.pipeline.db.reader() as session:
            cursor = read_cursor(session, self.binding.id)
        if cursor is None:
            raise LookupError(f"IMAP binding {self.binding.name} was removed")
        return cursor

    def _restart_cursor(self, uidvalidity: int) -> None:
        with self.pipeline.db.transaction() as session:
            restart_cursor(session, self.binding.id, uidvalidity)
