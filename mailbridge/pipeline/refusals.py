"""The refused RCPTs of one SMTP session, recorded in a bounded number of rows.

A client may try thousands of addresses on one connection (a directory
harvest, a spammer's list): a row each let 50 connections commit 13,096 rows
in 20 s. The first DETAILED refusals of a session get a row each (what an
administrator reads first); after them refusals are only counted, by reply,
and written as one summary row when the session ends, or every SUMMARY_EVERY
refusals on a long session. Every refusal is still accounted for, with its
reason; the log grows by a handful of rows a session, not one a RCPT.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from dataclasses import dataclass, field

from mailbridge.pipeline.types import RawMessage

DETAILED = 5  # refusals of a session recorded one row each
SUMMARY_EVERY = 1000  # counted refusals that make a summary row before the session ends
SAMPLE = 10  # addresses a summary row names


@dataclass
class RefusalTally:
    """Refused RCPTs of one session beyond its first `detailed`, by reply."""

    detailed: int = DETAILED
    summary_every: int = SUMMARY_EVERY
    recorded: int = 0
    counted: Counter[str] = field(default_factory=Counter)
    sample: list[str] = field(default_factory=list)
    last: RawMessage | None = None
    # RCPT refusals are recorded in threads, the summary when the connection
    # is lost: the two may overlap.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, raw: RawMessage, address: str, reply: str) -> bool:
        """True when this refusal gets its own row; else it is counted."""
        with self.lock:
            if self.recorded < self.detailed:
                self.recorded += 1
                return True
            self.counted[reply] += 1
            if len(self.sample) < SAMPLE:
                self.sample.append(address)
            self.last = raw
            return False

    @property
    def due(self) -> bool:
        """Enough counted refusals for a summary row without waiting for the end."""
        with self.lock:
            return self.counted.total() >= self.summary_every

    def take_summary(self) -> tuple[RawMessage, str] | None:
        """The summary row's message and reason, and a fresh count; None when
        nothing was counted since the last one."""
        with self.lock:
            if self.last is None or not self.counted:
                return None
            total = self.counted.total()
            replies = "; ".join(f"{n} x {reply}" for reply, n in self.counted.most_common())
            named = ", ".join(self.sample) + (", ..." if total > len(self.sample) else "")
            envelope = dataclasses.replace(self.last.envelope, rcpt_tos=tuple(self.sample))
            raw = dataclasses.replace(self.last, envelope=envelope)
            self.counted.clear()
            self.sample.clear()
            self.last = None
        reason = (
            f"RCPT: {total} more refused recipient(s) in this session, counted "
            f"rather than logged one by one: {replies} (addresses: {named})"
        )
        return raw, reason


def rows_for_refusal(
    tally: RefusalTally | None, raw: RawMessage, address: str, reply: str
) -> list[tuple[RawMessage, str]]:
    """The inbound-log rows (message, reason) one refused RCPT makes now:
    its own, a summary of those counted before it, or none."""
    if tally is None or tally.admit(raw, address, reply):
        return [(raw, f"RCPT {address}: {reply}")]
    if tally.due:
        summary = tally.take_summary()
        return [summary] if summary is not None else []
    return []
