"""The DATA reader on its own: a stream in, the stored message out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailbridge.budget import InFlightBudget
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from mailbridge.smtpdata import DataVerdict, receive_data
from mailbridge.spool import Spool, SpooledMessage, load_delivery

ENVELOPE = Envelope("alice@company.example", ("eng@company.example",))


def read(
    tmp_path: Path,
    stream: bytes,
    *,
    limit: int = 16,
    size_limit: int | None = None,
    budget: int = 1 << 30,
    in_memory: int = 1 << 20,
) -> tuple[DataVerdict, bytes, bytes]:
    """Feed `stream` to a reader that holds `limit` octets of a line at once;
    the verdict, the stored message and what is left after the data."""

    async def run() -> tuple[DataVerdict, bytes, bytes]:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(stream)
        reader.feed_eof()
        writer = Spool(tmp_path / "spool", in_memory).writer()
        verdict = await receive_data(reader, writer, size_limit, InFlightBudget(budget).claim())
        stored = b""
        if verdict is DataVerdict.RECEIVED:
            stored = load_delivery(writer.finish(ENVELOPE, Source.SMTP)).data
        return verdict, stored, await reader.read()

    return asyncio.run(run())


def test_lines_longer_than_the_reader_holds_are_stored_whole(tmp_path: Path) -> None:
    line = b"0123456789" * 10 + b"\r\n"
    assert read(tmp_path, line + b".\r\nQUIT\r\n") == (DataVerdict.RECEIVED, line, b"QUIT\r\n")


@pytest.mark.parametrize("split", [15, 16, 17])  # the CR of a long line's CRLF at a piece's end
def test_a_crlf_split_between_pieces_stays_one_line_end(tmp_path: Path, split: int) -> None:
    line = b"x" * split + b"\r\n"
    stream = line + b"..after\r\n.\r\n"
    assert read(tmp_path, stream)[:2] == (DataVerdict.RECEIVED, line + b".after\r\n")


def test_dots_are_unstuffed_and_bare_lfs_stored_as_crlf(tmp_path: Path) -> None:
    stream = b"..one\r\ntwo\n.\r\nthree\r\n.\r\n"
    # After a bare LF no line starts: no smuggled end of data (".\r\n" is content).
    assert read(tmp_path, stream, limit=64)[:2] == (
        DataVerdict.RECEIVED,
        b".one\r\ntwo\r\n.\r\nthree\r\n",
    )


def test_too_big_and_over_budget_are_read_to_the_end_and_kept_nowhere(tmp_path: Path) -> None:
    stream = b"y" * 100 + b"\r\n.\r\nNOOP\r\n"
    assert read(tmp_path, stream, size_limit=50) == (DataVerdict.TOO_BIG, b"", b"NOOP\r\n")
    assert read(tmp_path, stream, budget=50) == (DataVerdict.NO_ROOM, b"", b"NOOP\r\n")


def test_a_large_message_goes_to_a_spool_file(tmp_path: Path) -> None:
    lines = b"".join(b"line %d\r\n" % n for n in range(1000))

    async def run() -> RawMessage | SpooledMessage:
        reader = asyncio.StreamReader()
        reader.feed_data(lines + b".\r\n")
        writer = Spool(tmp_path / "spool", in_memory_limit=1000).writer()
        await receive_data(reader, writer, None, InFlightBudget(1 << 20).claim())
        return writer.finish(ENVELOPE, Source.SMTP)

    item = asyncio.run(run())
    assert isinstance(item, SpooledMessage)
    assert item.size == len(lines)
    assert item.load().data == lines
