"""Where deliveries run: batched, in worker processes or in threads.

Parsing, trimming and the ORM are CPU work in Python, and threads share one
interpreter lock; worker processes let deliveries use every core while the
asyncio loop keeps talking SMTP. Each worker builds its own `Pipeline` (its
own database engine) from the settings.

Deliveries are batched (group commit): each of `lanes` runners takes every
message waiting when it becomes free and hands them to one
`Pipeline.deliver_batch`, one transaction and one commit for all. Under load
the batches grow by themselves; an idle server delivers each message alone,
at once. A batch is bounded in bytes too, so that large messages are
parsed a few at a time. A worker that dies makes its batch a temporary
failure (the clients retry; nothing was committed) and the pool is rebuilt.

A large message crosses to a worker as the name of its spool file
(`SpooledMessage`), which the worker reads itself, instead of as a pickled
copy of its bytes.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from feed.db import Database
from mailbridge.config import Settings
from mailbridge.heap import TRIM_AFTER_BYTES, release_free_memory
from mailbridge.pipeline.deliver import TEMPORARY, DeliveryReport, Pipeline
from mailbridge.pipeline.route import normalize_recipient
from mailbridge.pipeline.types import RawMessage
from mailbridge.runtime import make_pipeline
from mailbridge.spool import Delivery, delivery_size, load_delivery

log = logging.getLogger(__name__)

# Enough to amortise a commit, small enough that a batch's slowest message
# does not hold the others' answers for long.
MAX_BATCH = 32
# A batch takes more messages only while it holds fewer bytes than this:
# every message of a batch is parsed before any is written.
MAX_BATCH_BYTES = 8 * 1024 * 1024
# Runners when deliveries run in threads of this process.
THREAD_LANES = 2

BatchRunner = Callable[[Sequence[Delivery]], Awaitable[list[DeliveryReport]]]

# The pipeline of this worker process, built once by `_start_worker`. A
# process pool's initializer can only hand state to later tasks this way.
_worker_pipeline: Pipeline | None = None


_Queued = tuple[list[Delivery], "asyncio.Future[list[DeliveryReport]]"]


class Deliverer:
    """Queues messages and delivers them in batches through `run_batch`."""

    def __init__(
        self,
        run_batch: BatchRunner,
        lanes: int,
        on_close: Callable[[], None] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.run_batch = run_batch
        self.lanes = lanes
        self.max_batch = max_batch
        self.on_close = on_close
        self._queue: asyncio.Queue[_Queued] | None = None
        self._runners: list[asyncio.Task[None]] = []

    async def deliver(self, raw: Delivery) -> DeliveryReport:
        """The report for `raw`, once its batch is committed (or failed)."""
        return (await self._submit([raw]))[0]

    async def deliver_together(self, raws: Sequence[RawMessage]) -> list[DeliveryReport]:
        """Reports for `raws`, delivered in one batch (so in one transaction,
        in this order): an IMAP folder's cursor moves over them together."""
        return await self._submit(raws)

    async def _submit(self, raws: Sequence[Delivery]) -> list[DeliveryReport]:
        queue = self._started()
        answer: asyncio.Future[list[DeliveryReport]] = asyncio.get_running_loop().create_future()
        queue.put_nowait((list(raws), answer))
        return await answer

    async def close(self) -> None:
        """Stop the runners (in the loop that started them), then the workers."""
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        if self.on_close is not None:
            await asyncio.to_thread(self.on_close)

    def _started(self) -> asyncio.Queue[_Queued]:
        # Created on first use: the queue and tasks belong to the running loop.
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._runners = [asyncio.create_task(self._run(self._queue)) for _ in range(self.lanes)]
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Queued]) -> None:
        while True:
            batch = [await queue.get()]
            size, octets = len(batch[0][0]), _octets(batch[0][0])
            while size < self.max_batch and octets < MAX_BATCH_BYTES and not queue.empty():
                batch.append(queue.get_nowait())
                size, octets = size + len(batch[-1][0]), octets + _octets(batch[-1][0])
            raws = [raw for group, _ in batch for raw in group]
            try:
                reports = await self.run_batch(raws)
            except Exception as exc:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            start = 0
            for group, answer in batch:
                if not answer.done():  # its SMTP session may have gone away
                    answer.set_result(reports[start : start + len(group)])
                start += len(group)


class WorkerPool:
    """`processes` worker processes, each with its own pipeline."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.processes = processes
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs threads (web server, thread pool).
        pool = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.settings,),
        )
        # Start every worker now (each submission to a pool with no idle
        # worker starts one), so the first messages do not wait a second
        # for a worker to import the pipeline.
        for _ in range(self.processes):
            pool.submit(_ready)
        return pool

    async def deliver_batch(self, raws: Sequence[Delivery]) -> list[DeliveryReport]:
        loop = asyncio.get_running_loop()
        pool = self.pool
        try:
            return await loop.run_in_executor(pool, _deliver_in_worker, list(raws))
        except BrokenProcessPool:
            log.error("a delivery worker died; restarting the worker pool")
            if self.pool is pool:
                self.pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def process_deliverer(settings: Settings, processes: int) -> Deliverer:
    workers = WorkerPool(settings, processes)
    return Deliverer(workers.deliver_batch, lanes=processes, on_close=workers.close)


def thread_deliverer(pipeline: Pipeline) -> Deliverer:
    async def run(raws: Sequence[Delivery]) -> list[DeliveryReport]:
        return await asyncio.to_thread(_deliver_and_trim, pipeline, raws)

    return Deliverer(run, lanes=THREAD_LANES)


def make_deliverer(settings: Settings, pipeline: Pipeline) -> Deliverer:
    if settings.workers > 0:
        return process_deliverer(settings, settings.workers)
    return thread_deliverer(pipeline)


def _start_worker(settings: Settings) -> None:
    global _worker_pipeline
    _worker_pipeline = make_pipeline(settings, Database(settings.database_url))


def _ready() -> None:
    return None


def _deliver_in_worker(raws: list[Delivery]) -> list[DeliveryReport]:
    if _worker_pipeline is None:
        raise RuntimeError("delivery worker started without its pipeline")
    return _deliver_and_trim(_worker_pipeline, raws)


def _deliver_and_trim(pipeline: Pipeline, items: Sequence[Delivery]) -> list[DeliveryReport]:
    """`deliver_items`, then, after large messages (whose parsed copies are
    gone by now), the freed memory back to the system."""
    reports = deliver_items(pipeline, items)
    if _octets(items) >= TRIM_AFTER_BYTES:
        release_free_memory()
    return reports


def deliver_items(pipeline: Pipeline, items: Sequence[Delivery]) -> list[DeliveryReport]:
    """Read the spooled messages of a batch (here, in the delivering process)
    and deliver them. One whose spool file is gone (its client was answered
    already, as a temporary failure) is deferred; the others go on."""
    loaded = [_load(item) for item in items]
    readable = [raw for raw in loaded if raw is not None]
    delivered = iter(pipeline.deliver_batch(readable) if readable else [])
    return [
        next(delivered) if raw is not None else _deferred(item)
        for item, raw in zip(items, loaded, strict=True)
    ]


def _load(item: Delivery) -> RawMessage | None:
    try:
        return load_delivery(item)
    except OSError as exc:
        log.warning("a spooled message cannot be read (%s); its client retries", exc)
        return None


def _deferred(item: Delivery) -> DeliveryReport:
    recipients = (normalize_recipient(r) for r in item.envelope.rcpt_tos)
    return DeliveryReport(dict.fromkeys(recipients, TEMPORARY))


def _octets(items: Sequence[Delivery]) -> int:
    return sum(delivery_size(item) for item in items)
