"""Ingest benchmark: MailBridge's SMTP door against a null aiosmtpd server.

Sends N messages of about 4 KB over C concurrent SMTP connections into 5
groups and 50 threads, first to a null handler that only answers 250, then to
a real `mailbridge serve` (each 250 comes after the commit), in the same run,
once it has finished starting. Prints both rates, their ratio, the server's
peak RSS and CPU time per message (with its worker processes), and checks
that every message became a post in the right number of threads. The
machines are noisy (the baseline alone moves by half between runs), so
`--rounds N` repeats the pair N times and reports the median ratio.

    python bench/ingest.py                      # SQLite in a temporary folder
    python bench/ingest.py --rounds 5           # five pairs, median ratio
    python bench/ingest.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import email.policy
import os
import random
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feed import admin  # noqa: E402
from feed.db import Database  # noqa: E402
from feed.posts import Post  # noqa: E402
from feed.threads import Thread  # noqa: E402
from mailbridge.migrate import upgrade_database  # noqa: E402

GROUPS = 5
THREADS = 50
WORDS = (
    "the",
    "release",
    "plan",
    "ship",
    "friday",
    "test",
    "build",
    "deploy",
    "review",
    "merge",
    "branch",
    "fix",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_messages(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """(recipient, bytes) pairs: 50 threads spread over 5 groups, replies chained."""
    rng = random.Random(seed)
    messages: list[tuple[str, bytes]] = []
    last_in_thread: dict[int, list[str]] = {}
    for n in range(count):
        thread = n % THREADS
        group = thread % GROUPS
        message = EmailMessage()
        message["From"] = f"User {n % 40} <user{n % 40}@company.example>"
        message["To"] = f"group{group}@company.example"
        message["Message-ID"] = f"<bench-{n}@company.example>"
        chain = last_in_thread.get(thread, [])
        message["Subject"] = ("Re: " if chain else "") + f"Topic {thread}"
        if chain:
            message["In-Reply-To"] = f"<{chain[-1]}>"
            message["References"] = " ".join(f"<{mid}>" for mid in chain[-10:])
        body = " ".join(rng.choice(WORDS) for _ in range(650))  # about 4 KB
        message.set_content(textwrap.fill(body, 72) + "\n")
        messages.append((str(message["To"]), message.as_bytes(policy=email.policy.SMTP)))
        last_in_thread[thread] = [*chain, f"bench-{n}@company.example"]
    return messages


@dataclass(frozen=True)
class Sent:
    rate: float  # messages per second
    client_cpu_ms: float  # this process's CPU (the SMTP clients) per message


def send_all(port: int, messages: Sequence[tuple[str, bytes]], connections: int) -> Sent:
    """Send over `connections` concurrent SMTP sessions; the rate and client CPU."""
    shares = [messages[i::connections] for i in range(connections)]

    def worker(share: Sequence[tuple[str, bytes]]) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            for rcpt, data in share:
                client.sendmail("bench@company.example", [rcpt], data)
        return len(share)

    started, cpu_before = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        sent = sum(pool.map(worker, shares))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    assert sent == len(messages)
    return Sent(len(messages) / elapsed, cpu * 1000 / len(messages))


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (the server's delivery workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids.extend(process_tree(int(child)))
    return pids


def process_cpu(pid: int) -> float:
    """User + system CPU time of one process, in seconds (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree, read before it exits."""
    return sum(process_cpu(member) for member in process_tree(pid))


def wait_until_idle(pid: int, timeout: float = 30.0) -> None:
    """Wait until a server and its workers have finished starting up.

    The figures are for a running server: the start-up (worker processes
    importing the pipeline, about a second of CPU each) is not part of them.
    """
    deadline = time.monotonic() + timeout
    previous = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = cpu_seconds(pid)
        if current - previous < 0.02:
            return
        previous = current
    raise SystemExit(f"the server was still busy {timeout:.0f} s after starting")


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process and its children (delivery workers)."""
    total = 0.0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


@contextmanager
def running(command: list[str], port: int, env: dict[str, str]) -> Iterator[int]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def database(url: str | None, data_dir: Path) -> Iterator[str]:
    """A fresh database: SQLite in data_dir, or a throwaway PostgreSQL schema."""
    if url is None:
        yield f"sqlite:///{data_dir / 'mailbridge.db'}"
        return
    base = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"mbbench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def set_up(url: str) -> None:
    upgrade_database(url)
    db = Database(url)
    with db.transaction() as session:
        for g in range(GROUPS):
            admin.add_group(session, f"group{g}", f"Group {g}")
            admin.add_binding(session, f"group{g}@company.example", f"group{g}", "anyone")
    db.dispose()


def count_results(url: str) -> tuple[int, int]:
    db = Database(url)
    with db.reader() as session:
        posts = session.scalar(select(func.count()).select_from(Post)) or 0
        threads = session.scalar(select(func.count()).select_from(Thread)) or 0
    db.dispose()
    return posts, threads


@dataclass(frozen=True)
class Round:
    null_rate: float
    rate: float
    rss_mib: float
    cpu_ms: float  # server CPU per message
    door_cpu_ms: float  # of which the serving process (SMTP door), without workers
    null_cpu_ms: float  # the null server's CPU per message
    client_cpu_ms: float  # the SMTP clients' CPU per message (mean of both runs)

    @property
    def ratio(self) -> float:
        return self.rate / self.null_rate


def run_round(messages: Sequence[tuple[str, bytes]], connections: int, pg_url: str | None) -> Round:
    """The null server, then a fresh MailBridge (new data folder and database)."""
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        with database(pg_url, data_dir) as url:
            set_up(url)
            null_port, smtp_port = free_port(), free_port()
            env = {
                **os.environ,
                "MAILBRIDGE_DATA_DIR": str(data_dir),
                "MAILBRIDGE_DATABASE_URL": url,
                "MAILBRIDGE_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
                "MAILBRIDGE_LMTP_LISTEN": f"127.0.0.1:{free_port()}",
                "MAILBRIDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
                "MAILBRIDGE_MAIL_DOMAIN": "mb.company.example",
                "PYTHONPATH": str(ROOT),
            }
            null_cmd = [sys.executable, str(ROOT / "bench" / "null_smtp.py"), str(null_port)]
            with running(null_cmd, null_port, env) as null_pid:
                null_cpu_before = process_cpu(null_pid)
                null = send_all(null_port, messages, connections)
                null_cpu = process_cpu(null_pid) - null_cpu_before
            serve_cmd = [sys.executable, "-m", "mailbridge.cli", "serve", "--log-level=WARNING"]
            with running(serve_cmd, smtp_port, env) as pid:
                wait_until_idle(pid)
                cpu_before, door_before = cpu_seconds(pid), process_cpu(pid)
                sent = send_all(smtp_port, messages, connections)
                cpu = cpu_seconds(pid) - cpu_before
                door = process_cpu(pid) - door_before
                rss = peak_rss_mib(pid)
            posts, threads = count_results(url)
    if posts != len(messages) or threads != THREADS:
        raise SystemExit(f"expected {len(messages)} posts in {THREADS} threads")
    per_message = 1000 / len(messages)
    return Round(
        null.rate,
        sent.rate,
        rss,
        cpu * per_message,
        door * per_message,
        null_cpu * per_message,
        (null.client_cpu_ms + sent.client_cpu_ms) / 2,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default SQLite)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="null-then-MailBridge pairs; the median ratio"
    )
    args = parser.parse_args()
    messages = make_messages(args.messages)
    size = sum(len(data) for _, data in messages) / len(messages)
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"backend          {backend}")
    print(
        f"messages         {len(messages)} x {size / 1024:.1f} KB, {args.connections} connections"
    )
    print(f"posts / threads  checked {len(messages)} / {THREADS} after every round")
    rounds = []
    for number in range(1, args.rounds + 1):
        result = run_round(messages, args.connections, args.database_url)
        rounds.append(result)
        print(
            f"round {number}: null aiosmtpd {result.null_rate:7.1f} msg/s, "
            f"mailbridge {result.rate:6.1f} msg/s, ratio {result.ratio:.3f}, "
            f"server CPU {result.cpu_ms:.2f} ms/msg (door {result.door_cpu_ms:.2f}; "
            f"null server {result.null_cpu_ms:.2f}, clients {result.client_cpu_ms:.2f}), "
            f"peak RSS {result.rss_mib:.1f} MiB"
        )
    print(f"median ratio     {statistics.median(r.ratio for r in rounds):8.3f}")
    print(f"median rate      {statistics.median(r.rate for r in rounds):8.1f} msg/s")
    print(f"server peak RSS  {max(r.rss_mib for r in rounds):8.1f} MiB (with its worker processes)")


if __name__ == "__main__":
    main()
