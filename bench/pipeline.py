"""In-process pipeline cost: CPU and wall time per message, no SMTP, no workers.

Delivers the messages of bench/ingest.py (same seed, same groups) straight
through `Pipeline.deliver_batch` in batches of B, on SQLite in a temporary
folder (or a throwaway PostgreSQL schema), and prints the time per message
and how many SQL statements each message cost. It isolates the pipeline
from the SMTP door and the worker processes that bench/ingest.py measures.

    python bench/pipeline.py                    # 2,000 messages, batches of 3
    python bench/pipeline.py --batch 1 --messages 1000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import database, make_messages, set_up  # noqa: E402
from feed.blobs import BlobStore  # noqa: E402
from feed.db import Database  # noqa: E402
from mailbridge.pipeline.deliver import Pipeline  # noqa: E402
from mailbridge.pipeline.types import Envelope, RawMessage, Source  # noqa: E402


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default SQLite)")
    args = parser.parse_args()
    raws = [
        RawMessage(data, Envelope("bench@company.example", (rcpt,), "127.0.0.1:1"), Source.SMTP)
        for rcpt, data in make_messages(args.messages)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="mb-pipeline-") as tmp,
        database(args.database_url, Path(tmp)) as url,
    ):
        set_up(url)
        db = Database(url)
        pipeline = Pipeline(db, BlobStore(Path(tmp) / "blobs"), frozenset({"mb.example"}))
        statements = 0

        @event.listens_for(db.engine, "before_cursor_execute")
        def count(*_: Any) -> None:
            nonlocal statements
            statements += 1

        (user0, sys0), wall0 = cpu_seconds(), time.perf_counter()
        for start in range(0, len(raws), args.batch):
            pipeline.deliver_batch(raws[start : start + args.batch])
        (user1, sys1), wall1 = cpu_seconds(), time.perf_counter()
        db.dispose()
    per = 1000 / len(raws)
    print(f"messages         {len(raws)} in batches of {args.batch}")
    print(f"wall             {(wall1 - wall0) * per:6.2f} ms/msg")
    print(f"CPU user/system  {(user1 - user0) * per:6.2f} / {(sys1 - sys0) * per:.2f} ms/msg")
    print(f"SQL statements   {statements / len(raws):6.2f} per message")


if __name__ == "__main__":
    main()
