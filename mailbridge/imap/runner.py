"""Keeps every IMAP binding in sync, each in its own task of the serve loop.

A binding's task connects, syncs, then waits for news with IDLE (RFC 2177:
re-issued before the server's 30-minute limit) or by polling, and syncs
again. Any failure (server down, wrong password, folder gone) is recorded
on the binding as its state and last error, and the task retries after an
exponential backoff with jitter; one binding's trouble never touches
another's. A login the server refused is tried again only much later (at
once with a new password): each refusal makes the server slow down every
login from our address, the other bindings' included. The service notices
bindings added or removed while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from sqlalchemy import select

from feed.base import utcnow
from feed.bindings import ImapBinding
from feed.mailboxes import record_state
from mailbridge.imap.client import ImapAuthenticationError, ImapClient, ImapError
from mailbridge.imap.sync import FolderSync, SyncTarget, sync_target
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.workers import Deliverer

log = logging.getLogger(__name__)
# The state of a binding whose login the server refused (the password is
# wrong); `binding set-password` clears it.
REFUSED = "refused"


@dataclass(frozen=True)
class Timing:
    """How long to wait for what; tests shorten them."""

    # IDLE is re-issued this often: under the 29 minutes of RFC 2177 §3, and
    # short enough that a connection a NAT dropped silently is noticed.
    idle: float = 10 * 60
    poll: float = 60.0  # servers without IDLE
    retry_failed: float = 30.0  # a message failed: try again this soon
    backoff_first: float = 1.0
    backoff_max: float = 300.0
    refresh: float = 10.0  # look for added or removed bindings
    command_timeout: float = 30.0
    # A login the server refused (the password is wrong) is tried again this
    # late: each refusal makes the server slow down or ban every login from
    # our address (Dovecot's auth penalty: 4 s or more for 15 s; fail2ban's
    # default jail: 5 failures in 10 minutes), the other bindings' included.
    # A new password (`binding set-password`) is tried at once.
    login_refused: float = 15 * 60


@dataclass
class Backoff:
    """Exponential backoff with full jitter."""

    first: float
    most: float
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        self.failures += 1
        ceiling: float = min(self.most, self.first * 2.0 ** (self.failures - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


class MailboxRunner:
    """Syncs one IMAP binding until cancelled."""

    def __init__(
        self,
        binding_id: int,
        pipeline: Pipeline,
        deliverer: Deliverer,
        secret_key: str,
        timing: Timing,
    ) -> None:
        self.binding_id = binding_id
        self.pipeline = pipeline
        self.deliverer = deliverer
        self.secret_key = secret_key
        self.timing = timing
        self.backoff = Backoff(timing.backoff_first, timing.backoff_max)

    async def run(self) -> None:
        await self._wait_out_refusal()
        while True:
            try:
                target = await asyncio.to_thread(self._target)
                await self._session(target)
            except asyncio.CancelledError:
                raise
            except ImapAuthenticationError as exc:
                if exc.temporary:
                    await self._failed("backing off", str(exc))
                else:
                    await self._failed(REFUSED, str(exc), self.timing.login_refused)
            except ImapError as exc:
                await self._failed("backing off", str(exc))
            except Exception as exc:
                log.exception("IMAP binding %s failed", self.binding_id)
                await self._failed("failing", f"internal error: {exc!r}")

    async def _session(self, target: SyncTarget) -> None:
        await self._state("connecting")
        client = await ImapClient.open(target.mailbox, self.timing.command_timeout)
        try:
            sync = FolderSync(target, self.pipeline, self.deliverer)
            waiting = "idle" if client.has("IDLE") else "polling"
            while True:
                await self._state("syncing")
                result = await sync.run(client)
                await self._state(waiting, synced=True)
                if result.delivered:
                    log.info("IMAP %s: %d message(s)", target.name, result.delivered)
                wait = self.timing.idle if waiting == "idle" else self.timing.poll
                if result.retry_soon:
                    wait = min(wait, self.timing.retry_failed)
                await client.wait_for_news(wait)
                # Only a connection that lived through a wait counts as healthy:
                # one that syncs and then breaks each time keeps backing off.
                self.backoff.reset()
        finally:
            await client.close()

    async def _failed(self, state: str, error: str, delay: float | None = None) -> None:
        """Record the failure and wait `delay`, by default the next backoff."""
        if delay is None:
            delay = self.backoff.next_delay()
        log.warning("IMAP binding %s: %s; retrying in %.0f s", self.binding_id, error, delay)
        try:
            await self._state(state, error)
        except Exception:  # the database is down too: retry all the same
            log.exception("IMAP binding %s: cannot record its state", self.binding_id)
        await asyncio.sleep(delay)

    async def _wait_out_refusal(self) -> None:
        """A login refused shortly before a restart (of the binding's task or
        of the server) is not tried again before its time either."""
        try:
            left = await asyncio.to_thread(self._refusal_left)
        except Exception:  # the database is down: the first attempt will say so
            log.exception("IMAP binding %s: cannot read its state", self.binding_id)
            return
        if left > 0:
            log.info("IMAP binding %s: login refused; retrying in %.0f s", self.binding_id, left)
            await asyncio.sleep(left)

    def _refusal_left(self) -> float:
        with self.pipeline.db.reader() as session:
            row = session.get(ImapBinding, self.binding_id)
            if row is None or row.state != REFUSED or row.state_changed_at is None:
                return 0.0
            since = (utcnow() - row.state_changed_at).total_seconds()
        # A clock set back must not make the wait longer than one interval.
        return min(self.timing.login_refused, self.timing.login_refused - since)

    async def _state(self, state: str, error: str | None = None, *, synced: bool = False) -> None:
        def write() -> None:
            with self.pipeline.db.transaction() as session:
                record_state(session, self.binding_id, state, error, synced=synced)

        await asyncio.to_thread(write)

    def _target(self) -> SyncTarget:
        with self.pipeline.db.reader() as session:
            row = session.get(ImapBinding, self.binding_id)
            if row is None:
                raise LookupError(f"IMAP binding {self.binding_id} was removed")
            return sync_target(row, self.secret_key)


class MailboxService:
    """One `MailboxRunner` task per IMAP binding, following the table."""

    def __init__(
        self,
        pipeline: Pipeline,
        deliverer: Deliverer,
        secret_key: str,
        timing: Timing | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.deliverer = deliverer
        self.secret_key = secret_key
        self.timing = timing or Timing()
        self._runners: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._watcher = asyncio.create_task(self._watch())

    async def refresh(self) -> None:
        """Start runners for new bindings, stop those of removed or edited ones."""
        wanted = set(await asyncio.to_thread(self._bindings))
        stopped = []
        for key, task in list(self._runners.items()):
            if key not in wanted:
                stopped.append(self._runners.pop(key))
                task.cancel()
            elif task.done():  # a runner never ends by itself: start it again
                self._runners.pop(key)
                error = None if task.cancelled() else task.exception()
                log.error("IMAP binding %s: its task ended (%r); restarting it", key[0], error)
        # An edited binding's old task ends before its successor starts.
        await asyncio.gather(*stopped, return_exceptions=True)
        for key in wanted - set(self._runners):
            runner = MailboxRunner(
                key[0], self.pipeline, self.deliverer, self.secret_key, self.timing
            )
            self._runners[key] = asyncio.create_task(runner.run(), name=f"imap-{key[0]}")

    async def close(self) -> None:
        tasks = [*self._runners.values(), *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runners.clear()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.timing.refresh)
            try:
                await self.refresh()
            except Exception:
                log.exception("cannot read the IMAP bindings")

    def _bindings(self) -> list[tuple[int, str]]:
        """Each binding with a fingerprint of its settings: an edit restarts it."""
        with self.pipeline.db.reader() as session:
            rows = session.execute(
                select(
                    ImapBinding.id,
                    ImapBinding.name,
                    ImapBinding.host,
                    ImapBinding.port,
                    ImapBinding.tls,
                    ImapBinding.username,
                    ImapBinding.password_sealed,
                    ImapBinding.folder,
                    ImapBinding.after_import,
                )
            ).all()
        return [(row[0], "\0".join(str(v) for v in row[1:])) for row in rows]
