"""Where `Pipeline.deliver` runs: worker processes, or threads of this process.

Parsing, trimming and the ORM are CPU work in Python, and threads share one
interpreter lock; worker processes let a delivery use every core while the
asyncio loop keeps talking SMTP. Each worker builds its own `Pipeline` (its
own database engine) from the settings. A worker that dies makes that
delivery a temporary failure (the client retries) and the pool is rebuilt.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from feed.db import Database
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import DeliveryReport, Pipeline
from mailbridge.pipeline.types import RawMessage
from mailbridge.runtime import make_pipeline

log = logging.getLogger(__name__)

# The pipeline of this worker process, built once by `_start_worker`. A
# process pool's initializer can only hand state to later tasks this way.
_worker_pipeline: Pipeline | None = None


class Deliverer(Protocol):
    async def deliver(self, raw: RawMessage) -> DeliveryReport: ...

    def close(self) -> None: ...


class ThreadDeliverer:
    """Runs deliveries in the default thread pool of the running loop."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def deliver(self, raw: RawMessage) -> DeliveryReport:
        return await asyncio.to_thread(self.pipeline.deliver, raw)

    def close(self) -> None:
        return None


class ProcessDeliverer:
    """Runs deliveries in a pool of `processes` worker processes."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.processes = processes
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs threads (web server, thread pool).
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.settings,),
        )

    async def deliver(self, raw: RawMessage) -> DeliveryReport:
        loop = asyncio.get_running_loop()
        pool = self.pool
        try:
            return await loop.run_in_executor(pool, _deliver_in_worker, raw)
        except BrokenProcessPool:
            log.error("a delivery worker died; restarting the worker pool")
            if self.pool is pool:
                self.pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def make_deliverer(settings: Settings, pipeline: Pipeline) -> Deliverer:
    if settings.workers > 0:
        return ProcessDeliverer(settings, settings.workers)
    return ThreadDeliverer(pipeline)


def _start_worker(settings: Settings) -> None:
    global _worker_pipeline
    _worker_pipeline = make_pipeline(settings, Database(settings.database_url))


def _deliver_in_worker(raw: RawMessage) -> DeliveryReport:
    if _worker_pipeline is None:
        raise RuntimeError("delivery worker started without its pipeline")
    return _worker_pipeline.deliver(raw)
