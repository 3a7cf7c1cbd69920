"""The importer's pure helpers: UID sets, FETCH answers, backoff."""

from __future__ import annotations

import random

from mailbridge.imap.client import _parse_fetch, uid_set
from mailbridge.imap.runner import Backoff


def test_uid_sets_are_compact_ranges() -> None:
    assert uid_set([7]) == "7"
    assert uid_set([3, 1, 2, 7, 9, 8, 12]) == "1:3,7:9,12"
    assert uid_set([5, 5, 6]) == "5:6"


def test_fetch_answers_give_each_uid_its_message_wherever_the_uid_is_named() -> None:
    lines = [
        b"1 FETCH (UID 41 BODY[] {5}",
        b"hello",
        b")",
        b"2 FETCH (BODY[] {3}",  # some servers name the UID after the literal
        b"bye",
        b" UID 42)",
        b"Fetch completed (0.001 + 0.000 secs).",
    ]
    assert _parse_fetch(lines) == {41: b"hello", 42: b"bye"}


def test_backoff_grows_with_jitter_up_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [min(60.0, 2.0**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert delays[-1] >= 30.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0
