"""RCPT checks with deadlines, and refusals recorded without holding the answer.

An RCPT check reads the bindings; with the database locked by someone else
it could wait for as long as the lock is held, and every waiting check held
a thread of the shared pool, so valid recipients waited behind them. Here
the checks run in threads of their own, at most one per thread at a time
(a check is started only when a thread is free for it), each under a
deadline well inside a client's five minutes (RFC 5321 §4.5.3.2.3); its
database work has a shorter lock timeout still. No answer in time is a
temporary failure, `451 4.3.0`.

A refused RCPT (or an oversize message) is recorded in the inbound log,
but the client's answer does not wait for that: the records are written in
the background, by one thread, with a lock timeout of their own. Losing one
(the database is down, or the backlog is full) is logged; it is never the
client's problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mailbridge.pipeline.route import RecipientCheck
from mailbridge.pipeline.types import RawMessage

log = logging.getLogger(__name__)

CHECK_THREADS = 4
CHECK_DEADLINE = 5.0  # seconds, for the whole RCPT check
DATABASE_WAIT = 2.0  # seconds a check's or a record's database work waits for a lock
REFUSAL_BACKLOG = 1000
CLOSE_WAIT = 10.0  # seconds to write the refusals still queued at shutdown
DROP_LOG_INTERVAL = 60.0


class AcceptedRecipients:
    """Bound addresses recently accepted at RCPT, so that a busy door does
    not ask the database for the same few addresses on every message.

    Only acceptances are kept, for `ttl` seconds: a new binding works at
    once, and a removed one is refused again after at most `ttl` (meanwhile
    the delivery's own routing, which always reads the database, refuses the
    message and records why).
    """

    def __init__(self, ttl: float = 10.0, capacity: int = 10_000) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._until: dict[str, float] = {}

    def __contains__(self, address: str) -> bool:
        until = self._until.get(address)
        return until is not None and until > time.monotonic()

    def add(self, address: str) -> None:
        if len(self._until) >= self.capacity:
            self._until.clear()
        self._until[address] = time.monotonic() + self.ttl


class RecipientChecks:
    """Runs `check(address, wait)` in its own threads, under a deadline."""

    def __init__(
        self,
        check: Callable[[str, float], RecipientCheck],
        threads: int = CHECK_THREADS,
        deadline: float = CHECK_DEADLINE,
        database_wait: float = DATABASE_WAIT,
    ) -> None:
        self.check = check
        self.deadline = deadline
        self.database_wait = database_wait
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="rcpt-check")
        self._free = asyncio.Semaphore(threads)

    async def run(self, address: str) -> RecipientCheck | None:
        """The check's answer, or None when there was none in time (or it failed)."""
        try:
            async with asyncio.timeout(self.deadline):
                return await self._in_a_free_thread(address)
        except TimeoutError:
            log.warning("no answer for RCPT %s within %.0f s", address, self.deadline)
        except Exception:
            log.exception("checking RCPT %s failed", address)
        return None

    async def _in_a_free_thread(self, address: str) -> RecipientCheck:
        await self._free.acquire()
        loop = asyncio.get_running_loop()
        future = self._threads.submit(self.check, address, self.database_wait)

        def free_the_slot(_: object) -> None:
            # The thread is free again when the check ends, not when its
            # waiter gives up: a slot is a thread.
            with contextlib.suppress(RuntimeError):  # the loop has closed (shutdown)
                loop.call_soon_threadsafe(self._free.release)

        future.add_done_callback(free_the_slot)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


class RefusalRecorder:
    """Writes `record(raw, reason, wait)` calls in the background, best effort."""

    def __init__(
        self,
        record: Callable[[RawMessage, str, float], None],
        backlog: int = REFUSAL_BACKLOG,
        database_wait: float = DATABASE_WAIT,
    ) -> None:
        self.record_refusal = record
        self.database_wait = database_wait
        self._queue: asyncio.Queue[tuple[RawMessage, str]] = asyncio.Queue(backlog)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="refusal-log")
        self._writer: asyncio.Task[None] | None = None
        self._dropped = 0
        self._dropped_logged_at = 0.0

    def record(self, raw: RawMessage, reason: str) -> None:
        """Queue a refusal for the inbound log; returns at once."""
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all())
        try:
            self._queue.put_nowait((raw, reason))
        except asyncio.QueueFull:
            self._note_dropped()

    async def close(self) -> None:
        """Write what is queued (for a while), then stop."""
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._queue.join(), CLOSE_WAIT)
            except TimeoutError:
                log.warning("%d refusal(s) not recorded at shutdown", self._queue.qsize())
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self._thread.shutdown(wait=True)

    async def _write_all(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            raw, reason = await self._queue.get()
            try:
                await loop.run_in_executor(
                    self._thread, self.record_refusal, raw, reason, self.database_wait
                )
            except Exception as exc:
                log.warning("could not record a refusal (%s): %r", reason, exc)
            finally:
                self._queue.task_done()

    def _note_dropped(self) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROP_LOG_INTERVAL:
            log.warning("refusal log backlog full: %d refusal(s) not recorded", self._dropped)
            self._dropped_logged_at = now
            self._dropped = 0
