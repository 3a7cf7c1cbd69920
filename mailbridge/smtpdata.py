"""Reading the DATA of an SMTP or LMTP transaction into the spool.

aiosmtpd answers a line longer than 1,000 octets with a permanent 500 and
keeps the message as a list of lines in memory. Mail servers accept longer
lines (Postfix and Exim do, up to the message size limit; Outlook's HTML
mail has them), so this reader does too, and writes each line to the spool
as it arrives, counting it against the size limit and the budget of bytes
in flight. After a refusal it reads on to the end of the data, keeping
nothing, so that the answer comes after the data as RFC 5321 §4.2.5 wants.

Lines end with CRLF (RFC 5321 §2.3.8); only a CRLF ends a line for the
protocol (end of data, dot-stuffing), so that a bare LF can never end the
data early (SMTP smuggling). A bare LF in the content is stored as CRLF, as
Postfix stores it.
"""

from __future__ import annotations

import asyncio
import enum

from mailbridge.budget import Claim
from mailbridge.spool import SpoolWriter

END_OF_DATA = b".\r\n"


class DataVerdict(enum.Enum):
    RECEIVED = "received"
    TOO_BIG = "larger than the size limit"
    NO_ROOM = "over the budget of bytes in flight"


async def receive_data(
    reader: asyncio.StreamReader, sink: SpoolWriter, size_limit: int | None, claim: Claim
) -> DataVerdict:
    """Read up to the end-of-data line into `sink`; what became of the message.

    The reader's limit bounds how much of a line is held at once: a longer
    line arrives in pieces. Connection loss raises (the caller discards).
    """
    verdict = DataVerdict.RECEIVED
    line_start = True  # the next piece begins a line
    held_cr = b""  # a piece's final CR, which may pair with the next piece's LF
    size = 0
    while True:
        piece, complete = await _next_piece(reader)
        if held_cr:
            piece, held_cr = held_cr + piece, b""
        if line_start and piece == END_OF_DATA:
            return verdict
        if line_start and piece.startswith(b"."):
            piece = piece[1:]  # RFC 5321 §4.5.2: undo the transparency dot
        if not complete and piece.endswith(b"\r"):
            piece, held_cr = piece[:-1], b"\r"
        line_start = piece.endswith(b"\r\n")
        if complete and not line_start:
            piece = piece[:-1] + b"\r\n"  # a bare LF
        size += len(piece)
        if verdict is not DataVerdict.RECEIVED:
            continue
        if size_limit and size > size_limit:
            verdict = DataVerdict.TOO_BIG
        elif not claim.cover(size):
            verdict = DataVerdict.NO_ROOM
        else:
            sink.write(piece)
            continue
        sink.discard()


async def _next_piece(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """The next line, or as much of a long one as the reader holds; and
    whether it is a whole line (ends with LF)."""
    try:
        return await reader.readuntil(b"\n"), True
    except asyncio.LimitOverrunError as overrun:
        return await reader.read(overrun.consumed), False
    except asyncio.IncompleteReadError as closed:
        raise ConnectionResetError("connection closed during DATA") from closed
