"""Writers to a SQLite file take turns through a lock file beside it."""

from __future__ import annotations

import threading
from pathlib import Path

from feed.db import writer_turn


def test_a_writer_waits_for_the_turn_and_gets_it_once_released(tmp_path: Path) -> None:
    lock = tmp_path / "mailbridge.db.write-lock"
    entered = threading.Event()

    def second_writer() -> None:
        with writer_turn(lock):
            entered.set()

    with writer_turn(lock):
        other = threading.Thread(target=second_writer)
        other.start()
        assert not entered.wait(0.3), "the second writer got in during the first's turn"
    other.join(timeout=10)
    assert entered.is_set()
