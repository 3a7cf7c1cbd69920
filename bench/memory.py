"""Memory benchmark: a burst of large messages into `mailbridge serve`.

Starts `mailbridge serve` as a subprocess (a fresh data folder and database),
waits until it is idle, then sends M messages of about S MB each over M
concurrent SMTP connections (a short text and a base64 attachment, 76-octet
lines, as a client would send a large file). While the burst runs, the
resident memory of the server process and of its whole tree (with its
delivery workers) is sampled every 20 ms. Prints:

- the baseline RSS (idle, before the burst);
- the peak RSS above the baseline, in MiB and as a multiple of the bytes in
  flight (M x S: every message of the burst is in flight at once);
- the RSS once the burst is over and the server is idle again, against the
  baseline.

Targets (issue 8): peak above baseline at most 3 x the bytes in flight, and
back within 20% of the baseline after the burst. The server's budget of bytes
in flight is set to hold the whole burst unless MAILBRIDGE_MAX_BYTES_IN_FLIGHT
is set (then messages over it are answered 451/452 and the replies show it).

    python bench/memory.py                      # 16 x 20 MB, SQLite
    python bench/memory.py --messages 8 --size-mb 10
    python bench/memory.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    count_results,
    database,
    free_port,
    process_tree,
    running,
    set_up,
    wait_until_idle,
)

MIB = 1024 * 1024
SAMPLE_SECONDS = 0.02


def make_message(number: int, size: int) -> bytes:
    """About `size` octets: a short text and an attachment of random bytes
    (incompressible, so base64 makes it 4/3 of its size on the wire)."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = "Alice <alice@company.example>"
    message["To"] = "group0@company.example"
    message["Subject"] = f"Large file {number}"
    message["Message-ID"] = f"<memory-{number}-{os.getpid()}@company.example>"
    message.set_content("The file you asked for is attached.\n")
    payload = os.urandom(size * 3 // 4)
    message.add_attachment(
        payload, maintype="application", subtype="octet-stream", filename="big.bin"
    )
    return message.as_bytes()


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS), 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (delivery workers)."""
    try:
        members = process_tree(pid)
    except (FileNotFoundError, ProcessLookupError):
        members = [pid]
    return sum(rss_bytes(member) for member in members)


@dataclass
class Sampler:
    """Samples the server's RSS in a thread: the peak of the process and of its tree."""

    pid: int
    peak_process: int = 0
    peak_tree: int = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                self.peak_process = max(self.peak_process, rss_bytes(self.pid))
                self.peak_tree = max(self.peak_tree, tree_rss_bytes(self.pid))
                stop.wait(SAMPLE_SECONDS)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def send_burst(port: int, messages: Sequence[bytes]) -> list[int]:
    """Every message on its own connection, all at once; the DATA reply codes."""
    start = threading.Barrier(len(messages))

    def send(data: bytes) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
            client.ehlo()
            start.wait()
            try:
                client.sendmail("alice@company.example", ["group0@company.example"], data)
            except smtplib.SMTPResponseException as exc:
                return exc.smtp_code
            except smtplib.SMTPRecipientsRefused as exc:
                return next(iter(exc.recipients.values()))[0]
        return 250

    with ThreadPoolExecutor(max_workers=len(messages)) as pool:
        return list(pool.map(send, messages))


@dataclass(frozen=True)
class Figures:
    baseline: int
    baseline_tree: int
    peak: int
    peak_tree: int
    after: int
    after_tree: int
    in_flight: int
    seconds: float
    codes: list[int]
    posts: int


def measure(count: int, size: int, pg_url: str | None, settle: float) -> Figures:
    messages = [make_message(n, size) for n in range(count)]
    in_flight = sum(len(m) for m in messages)
    with tempfile.TemporaryDirectory(prefix="mb-memory-") as tmp:
        data_dir = Path(tmp) / "var"
        with database(pg_url, data_dir) as url:
            set_up(url)
            smtp_port = free_port()
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
            env.setdefault("MAILBRIDGE_MAX_BYTES_IN_FLIGHT", str(in_flight + 16 * MIB))
            serve_cmd = [sys.executable, "-m", "mailbridge.cli", "serve", "--log-level=WARNING"]
            with running(serve_cmd, smtp_port, env) as pid:
                wait_until_idle(pid)
                baseline, baseline_tree = rss_bytes(pid), tree_rss_bytes(pid)
                sampler = Sampler(pid, baseline, baseline_tree)
                started = time.perf_counter()
                with sampler.running():
                    codes = send_burst(smtp_port, messages)
                seconds = time.perf_counter() - started
                wait_until_idle(pid, timeout=120)
                time.sleep(settle)
                after, after_tree = rss_bytes(pid), tree_rss_bytes(pid)
            posts, _ = count_results(url)
    return Figures(
        baseline,
        baseline_tree,
        sampler.peak_process,
        sampler.peak_tree,
        after,
        after_tree,
        in_flight,
        seconds,
        codes,
        posts,
    )


def report(figures: Figures) -> None:
    mib = MIB
    print(f"in flight        {figures.in_flight / mib:8.1f} MiB ({len(figures.codes)} messages)")
    print(f"replies          {sorted(figures.codes)}; posts {figures.posts}")
    print(f"burst            {figures.seconds:8.1f} s")
    for label, base, peak, after in (
        ("server process ", figures.baseline, figures.peak, figures.after),
        ("with workers   ", figures.baseline_tree, figures.peak_tree, figures.after_tree),
    ):
        above = peak - base
        print(
            f"{label}  baseline {base / mib:7.1f} MiB, peak +{above / mib:7.1f} MiB "
            f"({above / figures.in_flight:.2f} x in flight), after {after / mib:7.1f} MiB "
            f"({(after - base) / base:+.0%} of baseline)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=16)
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default SQLite)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds idle before the after-burst sample"
    )
    args = parser.parse_args()
    size = int(args.size_mb * 1000 * 1000)
    report(measure(args.messages, size, args.database_url, args.settle))


if __name__ == "__main__":
    main()
