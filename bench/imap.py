"""IMAP benchmark: a bound Dovecot folder against the SMTP door, same messages.

Three measurements in one run, each on a fresh data folder and database,
with `mailbridge serve` as a separate process (2 delivery workers):
1. SMTP: N messages of about 4 KB (bench/ingest.py's) sent over C
   connections to a bound address; messages per second.
2. IMAP: the same N messages appended to a staging folder of a throwaway
   Dovecot, then moved into the bound folder in one MOVE while the binding
   is idle; time from the MOVE until all N are posted, as messages per
   second, and its ratio to the SMTP rate.
3. IDLE latency: S single APPENDs, one at a time, each timed from the
   APPEND until its post is committed; median, p95 and max.
Every phase checks that each message became exactly one post.

    python bench/imap.py
    python bench/imap.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    database,
    free_port,
    make_messages,
    running,
    send_all,
    set_up,
    wait_until_idle,
)
from feed.db import Database  # noqa: E402
from feed.mailboxes import ImapSpec, add_imap_binding, list_imap_bindings  # noqa: E402
from feed.posts import Post  # noqa: E402
from tests.imap.dovecot import Dovecot  # noqa: E402

USER, PASSWORD = "desk", "desk-secret"
SECRET_KEY = "bench-secret-key-0123456789"
BOUND = "group0@company.example"


@contextmanager
def served(data_dir: Path, url: str) -> Iterator[tuple[int, int]]:
    """`mailbridge serve` on fresh ports: (pid, SMTP port), once started."""
    smtp_port = free_port()
    env = {
        **os.environ,
        "MAILBRIDGE_DATA_DIR": str(data_dir),
        "MAILBRIDGE_DATABASE_URL": url,
        "MAILBRIDGE_SECRET_KEY": SECRET_KEY,
        "MAILBRIDGE_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
        "MAILBRIDGE_LMTP_LISTEN": f"127.0.0.1:{free_port()}",
        "MAILBRIDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "MAILBRIDGE_MAIL_DOMAIN": "mb.company.example",
        "PYTHONPATH": str(ROOT),
    }
    serve_cmd = [sys.executable, "-m", "mailbridge.cli", "serve", "--log-level=WARNING"]
    with running(serve_cmd, smtp_port, env) as pid:
        yield pid, smtp_port


class Posts:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Post)) or 0

    def distinct(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count(func.distinct(Post.message_id)))) or 0

    def has(self, message_id: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.scalar(select(Post.id).where(Post.message_id == message_id))
        return found is not None

    def close(self) -> None:
        self.engine.dispose()


def wait_for(
    check: Callable[[], bool], what: str, timeout: float = 600, step: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)


def check_once(posts: Posts, expected: int) -> None:
    count, distinct = posts.count(), posts.distinct()
    if count != expected or distinct != expected:
        raise SystemExit(f"expected {expected} posts, found {count} ({distinct} distinct)")


def smtp_rate(messages: Sequence[bytes], connections: int, pg_url: str | None) -> float:
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        with database(pg_url, data_dir) as url:
            set_up(url)
            posts = Posts(url)
            with served(data_dir, url) as (pid, port):
                wait_until_idle(pid)
                rate = send_all(port, [(BOUND, data) for data in messages], connections).rate
            check_once(posts, len(messages))
            posts.close()
    return rate


def bind_folder(url: str, dovecot: Dovecot) -> None:
    db = Database(url)
    spec = ImapSpec(
        "desk", "group0", "127.0.0.1", dovecot.port, USER, PASSWORD, tls="none", senders="anyone"
    )
    with db.transaction() as session:
        add_imap_binding(session, SECRET_KEY, spec)
    db.dispose()


def binding_state(url: str) -> str:
    db = Database(url)
    with db.reader() as session:
        state = list_imap_bindings(session)[0].state
    db.dispose()
    return state


def imap_figures(
    messages: Sequence[bytes], singles: int, pg_url: str | None
) -> tuple[float, list[float]]:
    """(bulk rate in messages per second, APPEND-to-post delays in seconds)."""
    with (
        tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp,
        Dovecot({USER: PASSWORD}) as dovecot,
    ):
        data_dir = Path(tmp) / "var"
        dovecot.create_folder(USER, "Staging")
        with dovecot.client(USER) as client:  # one connection for the whole staging
            for data in messages:
                client.append("Staging", None, None, data)
        with database(pg_url, data_dir) as url:
            set_up(url)
            bind_folder(url, dovecot)
            posts = Posts(url)
            with served(data_dir, url) as (pid, _):
                wait_until_idle(pid)
                wait_for(lambda: binding_state(url) == "idle", "the binding to go idle", 60)
                with dovecot.client(USER) as client:
                    client.select("Staging")
                    started = time.perf_counter()
                    client.uid("MOVE", "1:*", "INBOX")
                wait_for(lambda: posts.count() >= len(messages), "every message posted")
                rate = len(messages) / (time.perf_counter() - started)
                check_once(posts, len(messages))
                delays = [single_delay(dovecot, posts, n) for n in range(singles)]
            check_once(posts, len(messages) + singles)
            posts.close()
    return rate, delays


def single_delay(dovecot: Dovecot, posts: Posts, number: int) -> float:
    message_id = f"single-{number}@bench.example"
    data = (
        f"From: Bench <bench@company.example>\r\nTo: {BOUND}\r\n"
        f"Subject: single {number}\r\nMessage-ID: <{message_id}>\r\n\r\nping {number}\r\n"
    ).encode()
    with dovecot.client(USER) as client:
        started = time.perf_counter()
        client.append("INBOX", None, None, data)
    wait_for(lambda: posts.has(message_id), f"single message {number}", 60, step=0.005)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--singles", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default SQLite)")
    args = parser.parse_args()
    messages = [data for _, data in make_messages(args.messages)]
    size = sum(len(d) for d in messages) / len(messages) / 1024
    print(f"backend          {'postgresql' if args.database_url else 'sqlite'}")
    print(f"messages         {len(messages)} x {size:.1f} KB; posts checked after every phase")
    smtp = smtp_rate(messages, args.connections, args.database_url)
    print(f"SMTP             {smtp:7.1f} msg/s ({args.connections} connections)")
    imap, delays = imap_figures(messages, args.singles, args.database_url)
    print(f"IMAP             {imap:7.1f} msg/s (one MOVE of {len(messages)} into the folder)")
    print(f"ratio IMAP/SMTP  {imap / smtp:7.3f}")
    p95 = statistics.quantiles(delays, n=20, method="inclusive")[18]
    print(
        f"IDLE delay       median {statistics.median(delays) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms over {len(delays)} appends"
    )


if __name__ == "__main__":
    main()
